# The verifier image: the gate and the workers are the same image with a different command.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY verifier ./verifier
COPY chains ./chains
RUN pip install --no-cache-dir '.[all]'
USER nobody
ENTRYPOINT ["x402-verifier"]
CMD ["--help"]
