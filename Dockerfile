# The field-encrypt / NoteLett image: `notelett serve` by default; the rotation jobs run
# `field-encrypt ...` in it (deploy/kubernetes/). Build: docker build -t field-encrypt .
# (It is not built or tested here: the development machines have no container engine.)

FROM python:3.11-slim AS build
# gcc and OpenSSL's headers build the compiled read path (src/field_encrypt/_gcm.c); the
# image has Python.h, and the runtime stage already has libcrypto (libssl3, for Python's ssl).
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev libssl-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md LICENSE ./
COPY src ./src
# Wheels for the project and every dependency of the extras production uses.
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[notelett,akv,aws-kms,postgres,cosmos]"

FROM python:3.11-slim
RUN useradd --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin app
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels \
      "field-encrypt[notelett,akv,aws-kms,postgres,cosmos]" \
    && rm -rf /wheels \
    && python -c "import field_encrypt._gcm"  # the compiled read path built: fail here if not
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
USER 10001:10001
WORKDIR /tmp
EXPOSE 4016
CMD ["notelett", "serve", "--host", "0.0.0.0", "--port", "4016"]
