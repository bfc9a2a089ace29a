// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

interface IERC20From {
    function transferFrom(address from, address to, uint256 value) external returns (bool);
}

/// @title Batcher
/// @notice A bundler's batch, for tests: in one call, pulls tokens from several owners who
/// approved this contract, all to one recipient. Whoever calls it pays the gas; the owners'
/// funds pay the recipient.
contract Batcher {
    function pull(address token, address[] calldata owners, uint256[] calldata amounts, address to)
        external
    {
        require(owners.length == amounts.length, "Batcher: length mismatch");
        for (uint256 i = 0; i < owners.length; i++) {
            require(IERC20From(token).transferFrom(owners[i], to, amounts[i]), "Batcher: transfer failed");
        }
    }
}
