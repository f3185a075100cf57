# Multi-stage: build a wheel with its dependencies, then a small non-root runtime.
FROM python:3.11-slim AS build
WORKDIR /src
RUN pip install --no-cache-dir build
COPY pyproject.toml README.md alembic.ini ./
COPY alembic ./alembic
COPY models ./models
COPY worker ./worker
COPY simulator ./simulator
RUN python -m build --wheel --outdir /wheels && pip wheel --no-cache-dir --wheel-dir /wheels /wheels/*.whl

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 mentionsync
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER mentionsync
WORKDIR /home/mentionsync
ENTRYPOINT ["mentionsync"]
CMD ["status"]
