# RobustScope dashboard image.
#   CPU (default):  docker build -t robustscope .
#   GPU:            docker build --build-arg TORCH_INDEX= -t robustscope:gpu .
#                   docker run --gpus all -p 8501:8501 robustscope:gpu
# An empty TORCH_INDEX installs the default torch build, which bundles CUDA; the default value
# takes PyTorch's smaller CPU-only wheels. Another base image (e.g. a CUDA runtime with Python 3.11)
# can be chosen with --build-arg BASE_IMAGE=...
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    ROBUSTSCOPE_DATA=/data \
    ROBUSTSCOPE_CHECKPOINTS=/app/checkpoints \
    ROBUSTSCOPE_RUNS=/runs

WORKDIR /app
COPY requirements.txt .
RUN if [ -n "$TORCH_INDEX" ]; then EXTRA="--extra-index-url $TORCH_INDEX"; else EXTRA=""; fi \
    && pip install $EXTRA -r requirements.txt

COPY . .
RUN mkdir -p /data /runs

# Datasets, checkpoints (shipped ones are copied into a fresh volume) and training runs persist.
VOLUME ["/data", "/app/checkpoints", "/runs"]
EXPOSE 8501
HEALTHCHECK CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8501/_stcore/health')"
# Inside the container the server must listen on all interfaces for `-p 8501:8501` to reach it; this
# is the deliberate opening of the loopback default in .streamlit/config.toml. Publish the port only
# where you mean to (e.g. `-p 127.0.0.1:8501:8501`). Pickled uploads stay refused unless the operator
# sets ROBUSTSCOPE_ALLOW_PICKLE_UPLOADS=1.
CMD ["streamlit", "run", "app.py", "--server.address=0.0.0.0", "--server.port=8501", "--server.headless=true"]
