# syntax=docker/dockerfile:1
# Multi-stage: build mentionsync and every dependency as wheels, then install
# them into a small runtime image that runs as an unprivileged user.
#
#   docker build -t mentionsync .
#   docker compose up -d --scale worker=4     (see docker-compose.yml)

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN pip install build
COPY pyproject.toml README.md alembic.ini ./
COPY alembic ./alembic
COPY models ./models
COPY worker ./worker
COPY simulator ./simulator
# The wheel carries the migrations (worker/_migrations), so `mentionsync db
# upgrade` needs no checkout; flower is the optional monitoring UI.
RUN python -m build --wheel --outdir /wheels \
 && pip wheel --wheel-dir /wheels "$(ls /wheels/mentionsync-*.whl)[flower]"

FROM python:3.11-slim AS runtime
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 LOG_FORMAT=json
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin mentionsync
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links /wheels "mentionsync[flower]"
USER mentionsync
WORKDIR /home/mentionsync
EXPOSE 8000 9800 9808 5555
# Every service of docker-compose.yml names its own command.
CMD ["mentionsync", "--help"]
