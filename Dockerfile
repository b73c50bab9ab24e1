# A Lambda container image for a Python handler (the seed's example).
# Build dist/bootstrap first: bash build_zipapp.sh
FROM python:3.12-slim

WORKDIR /app
COPY examples/uppercase/handler.py ./

# The event bridge: one file, any image with python3 >= 3.9.
COPY dist/bootstrap /usr/local/bin/bootstrap
# Unpack and byte-compile its bundled packages now, so that a cold start
# unpacks nothing (the image's filesystem is read-only in Lambda).
RUN bootstrap --prepare /opt/s3eb-cache
ENV S3_EVENT_BRIDGE_CACHE=/opt/s3eb-cache

# The instruction run for each group of events.
ENV HANDLER_COMMAND="python handler.py"

ENTRYPOINT ["/usr/local/bin/bootstrap"]
