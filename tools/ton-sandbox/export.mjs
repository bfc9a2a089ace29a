// Runs native TON payments in a @ton/sandbox Blockchain (the real TVM emulator, executing the
// treasury wallet contracts) and exports the receiving-side transactions as test fixtures.
//
//   cd tools/ton-sandbox && npm ci && node export.mjs
//
// Writes ../../tests/fixtures/ton_sandbox/transactions.json. The sandbox time is pinned and the
// treasuries are derived from fixed seeds, so re-running gives the same transactions.
//
// Then a jetton payment, executed by the standard (TEP-74) jetton minter and jetton wallet
// contracts whose compiled code ships in @ton-community/assets-sdk: the minter is deployed, mints
// to the payer's jetton wallet, and the payer's wallet transfers to the payee with a text comment
// as forward payload. Writes ../../tests/fixtures/ton_sandbox/jetton.json.
import { writeFileSync, mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import { Blockchain } from '@ton/sandbox';
import { Address, Dictionary, beginCell, toNano } from '@ton/core';

// The SDK is CommonJS; only its jetton wrappers (and the compiled code they embed) are used.
const require = createRequire(import.meta.url);
const { JettonMinter } = require('@ton-community/assets-sdk/dist/jetton/JettonMinter.js');
const { JettonWallet } = require('@ton-community/assets-sdk/dist/jetton/JettonWallet.js');

const HERE = dirname(fileURLToPath(import.meta.url));
const OUT = resolve(HERE, '../../tests/fixtures/ton_sandbox/transactions.json');
const JETTON_OUT = resolve(HERE, '../../tests/fixtures/ton_sandbox/jetton.json');
const JETTON_AMOUNT = 1_234_567n; // jetton units paid
const JETTON_MINTED = 10_000_000n; // minted to the payer first
const FORWARD_TON = toNano('0.01'); // forward_ton_amount: the payee owner is notified

// The commitment a payer puts in the comment (a fixed 64-hex string).
const COMMENT = 'c0ffee00'.repeat(8);
const AMOUNT = toNano('0.05');
const START = 1_760_000_000; // sandbox UNIX time for the first payment
// A bounceable address with no account behind it: the payment to it bounces.
const NOWHERE = new Address(0, Buffer.alloc(32, 0x5a));

function commentBody(text) {
    return beginCell().storeUint(0, 32).storeStringTail(text).endCell();
}

function globalId(blockchain) {
    const params = Dictionary.loadDirect(
        Dictionary.Keys.Int(32),
        Dictionary.Values.Cell(),
        blockchain.config,
    );
    return params.get(19).beginParse().loadInt(32);
}

function b64(cell) {
    return cell.toBoc().toString('base64');
}

function exportTx(name, expect, tx) {
    const msg = tx.inMessage;
    if (!msg || msg.info.type !== 'internal') throw new Error(`${name}: no internal in_msg`);
    const info = msg.info;
    const descr = tx.description;
    if (descr.type !== 'generic') throw new Error(`${name}: unexpected ${descr.type} transaction`);
    const compute = descr.computePhase;
    return {
        name,
        expect,
        boc: b64(tx.raw),
        hash: tx.hash().toString('hex'),
        now: tx.now,
        lt: tx.lt.toString(),
        account: `0:${tx.address.toString(16).padStart(64, '0')}`,
        aborted: descr.aborted,
        compute_skipped: compute.type === 'skipped',
        compute_success: compute.type === 'vm' ? compute.success : false,
        in_msg: {
            source: info.src.toRawString(),
            destination: info.dest.toRawString(),
            value: info.value.coins.toString(),
            bounce: info.bounce,
            bounced: info.bounced,
            created_lt: info.createdLt.toString(),
            created_at: info.createdAt,
            fwd_fee: info.forwardFee.toString(),
            ihr_fee: info.ihrFee.toString(),
            body_boc: b64(msg.body),
            body_hash: msg.body.hash().toString('hex'),
        },
    };
}

// The one transaction of `result` on account `to` receiving an internal message from `from`.
function received(result, from, to, bounced = false) {
    const found = result.transactions.filter(
        (tx) =>
            tx.inMessage?.info.type === 'internal' &&
            tx.inMessage.info.src.equals(from) &&
            tx.inMessage.info.dest.equals(to) &&
            tx.inMessage.info.bounced === bounced,
    );
    if (found.length !== 1) throw new Error(`expected one transaction on ${to}, got ${found.length}`);
    return found[0];
}

async function main() {
    const blockchain = await Blockchain.create();
    blockchain.now = START;
    const payer = await blockchain.treasury('payer');
    const payee = await blockchain.treasury('payee');
    const send = (args) => payer.send({ value: AMOUNT, ...args });

    const records = [];

    // (a) 0.05 TON with the comment.
    let result = await send({ to: payee.address, body: commentBody(COMMENT), bounce: true });
    records.push(exportTx('comment', 'payment', received(result, payer.address, payee.address)));

    // (b) the same to an undeployed bounceable address: it aborts there and bounces back.
    blockchain.now = START + 60;
    result = await send({ to: NOWHERE, body: commentBody(COMMENT), bounce: true });
    records.push(exportTx('bounced_at_payee', 'failed', received(result, payer.address, NOWHERE)));
    records.push(
        exportTx('bounce_back', 'bounced', received(result, NOWHERE, payer.address, true)),
    );

    // (c) 0.05 TON without a comment.
    blockchain.now = START + 120;
    result = await send({ to: payee.address, bounce: true });
    records.push(exportTx('no_comment', 'payment', received(result, payer.address, payee.address)));

    const doc = {
        generator: '@ton/sandbox 0.41.0 (tools/ton-sandbox/export.mjs)',
        global_id: globalId(blockchain),
        comment: COMMENT,
        amount: AMOUNT.toString(),
        payer: payer.address.toRawString(),
        payee: payee.address.toRawString(),
        undeployed: NOWHERE.toRawString(),
        transactions: records,
    };
    mkdirSync(dirname(OUT), { recursive: true });
    writeFileSync(OUT, JSON.stringify(doc, null, 2) + '\n');
    console.log(`wrote ${records.length} transactions to ${OUT} (global id ${doc.global_id})`);

    await exportJetton(blockchain, payer, payee);
}

// The one transaction of `result` on `to` from `from` whose inbound body starts with `op`.
function receivedOp(result, from, to, op) {
    const found = result.transactions.filter((tx) => {
        const info = tx.inMessage?.info;
        if (info?.type !== 'internal' || !info.src.equals(from) || !info.dest.equals(to)) {
            return false;
        }
        const body = tx.inMessage.body.beginParse();
        return body.remainingBits >= 32 && body.loadUint(32) === op;
    });
    if (found.length !== 1) throw new Error(`expected one op ${op} on ${to}, got ${found.length}`);
    return found[0];
}

function mustSucceed(result, what) {
    for (const tx of result.transactions) {
        const d = tx.description;
        if (d.type !== 'generic') continue;
        if (d.aborted || (d.computePhase.type === 'vm' && !d.computePhase.success)) {
            throw new Error(`${what}: a transaction failed on ${tx.address.toString(16)}`);
        }
    }
}

async function exportJetton(blockchain, payer, payee) {
    const admin = await blockchain.treasury('jetton-admin');
    const content = beginCell() // off-chain metadata (TEP-64): 0x01 + URI
        .storeUint(1, 8)
        .storeStringTail('https://example.invalid/jetton.json')
        .endCell();
    const minter = blockchain.openContract(
        JettonMinter.createFromConfig({ admin: admin.address, content }),
    );

    blockchain.now = START + 180;
    mustSucceed(await minter.sendDeploy(admin.getSender(), toNano('0.1')), 'deploy');
    blockchain.now = START + 240;
    mustSucceed(
        await minter.sendMint(admin.getSender(), payer.address, JETTON_MINTED, {
            notify: false,
            returnExcess: false,
        }),
        'mint',
    );

    const payerWalletAddress = await minter.getWalletAddress(payer.address);
    const payeeWalletAddress = await minter.getWalletAddress(payee.address);
    const payerWallet = blockchain.openContract(JettonWallet.createFromAddress(payerWalletAddress));
    if ((await payerWallet.getData()).balance !== JETTON_MINTED) {
        throw new Error('mint did not land');
    }

    // The payment: the payer's jetton wallet sends `transfer` on to the payee's wallet
    // (internal_transfer), which notifies the payee (transfer_notification) with the comment.
    blockchain.now = START + 300;
    const result = await payerWallet.send(payer.getSender(), payee.address, JETTON_AMOUNT, {
        notify: { amount: FORWARD_TON, payload: commentBody(COMMENT) },
        returnExcess: { address: payer.address },
    });
    mustSucceed(result, 'transfer');
    const OP_INTERNAL_TRANSFER = 0x178d4519;
    const OP_TRANSFER_NOTIFICATION = 0x7362d09c;
    const walletTx = receivedOp(
        result,
        payerWalletAddress,
        payeeWalletAddress,
        OP_INTERNAL_TRANSFER,
    );
    const ownerTx = receivedOp(result, payeeWalletAddress, payee.address, OP_TRANSFER_NOTIFICATION);
    const payeeWallet = blockchain.openContract(JettonWallet.createFromAddress(payeeWalletAddress));
    if ((await payeeWallet.getData()).balance !== JETTON_AMOUNT) {
        throw new Error('transfer did not land');
    }

    const doc = {
        generator:
            '@ton/sandbox 0.41.0 + @ton-community/assets-sdk 0.0.5 jetton contracts' +
            ' (tools/ton-sandbox/export.mjs)',
        global_id: globalId(blockchain),
        comment: COMMENT,
        amount: JETTON_AMOUNT.toString(),
        forward_ton_amount: FORWARD_TON.toString(),
        master: minter.address.toRawString(),
        payer: payer.address.toRawString(),
        payer_wallet: payerWalletAddress.toRawString(),
        payee: payee.address.toRawString(),
        payee_wallet: payeeWalletAddress.toRawString(),
        transactions: [
            exportTx('internal_transfer', 'payment', walletTx),
            exportTx('transfer_notification', 'notification', ownerTx),
        ],
    };
    writeFileSync(JETTON_OUT, JSON.stringify(doc, null, 2) + '\n');
    console.log(`wrote the jetton payment to ${JETTON_OUT} (master ${doc.master})`);
}

main().catch((err) => {
    console.error(err);
    process.exit(1);
});
