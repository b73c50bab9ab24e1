# The Lambda container image of examples/aws/template.yaml: each incoming/*.csv
# becomes a .jsonl. `docker buildx build --platform linux/arm64 --provenance=false .`
# from a fresh clone (linux/amd64 for x86_64): see README, Deploy.

# The event bridge, built for this image's interpreter and platform only
# (one jq build, one bytecode tree: ~3 MB). Needs PyPI for the pinned wheels.
FROM python:3.12-slim AS bootstrap
WORKDIR /src
COPY bridge.py build_zipapp.sh requirements.lock ./
RUN bash build_zipapp.sh --python 3.12 --platform "manylinux_2_28_$(uname -m)" dist/bootstrap

FROM python:3.12-slim
WORKDIR /app
COPY examples/aws/handler.py ./

# The event bridge: one file, any image with python3 >= 3.9.
COPY --from=bootstrap /src/dist/bootstrap /usr/bin/bootstrap
# Unpack what botocore opens as files now, so that a cold start unpacks
# nothing (the image's filesystem is read-only in Lambda).
RUN bootstrap --prepare /opt/s3eb-cache
ENV S3_EVENT_BRIDGE_CACHE=/opt/s3eb-cache

# The instruction run for each group of events.
ENV HANDLER_COMMAND="python handler.py"

ENTRYPOINT ["/usr/bin/bootstrap"]
