# clevr-remv for render farms (Kubernetes Indexed Jobs, Slurm with containers).
# Python 3.11, bpy 4.5 LTS with the system libraries it links against, and Cycles GPU kernels
# for the listed NVIDIA compute capabilities built into the image ('clevr-remv doctor --prepare'),
# so no pod spends minutes JIT-compiling kernels before its first scene.
#
#   docker build -t clevr-remv .                               # kernels for A100 and H100
#   docker build --build-arg CUDA_SM=80,86,89,90 -t clevr-remv .   # + A10/A40/L4/L40/RTX 4090
#   docker run --rm --gpus all clevr-remv doctor               # what a node offers
#   docker run --rm --gpus all -v /data:/data clevr-remv generate --scenes 20 --out /data/x --config preview
#
# The NVIDIA driver (libcuda, libnvoptix) is NOT in the image: the NVIDIA container runtime
# mounts the host's (the variables below ask it for the compute and OptiX/graphics parts).
FROM python:3.11-slim-bookworm

# What bpy 4.5.15's __init__.so and bundled libraries link against outside the wheel, found with
# `ldd` on Debian 12 (see docs/kubernetes.md): the OpenGL (GLVND) and X11 client libraries,
# loaded even when rendering headless, plus libgomp for OpenMP.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        libgl1 libglx0 libglvnd0 \
        libx11-6 libxcb1 libxau6 libxdmcp6 libxext6 libxfixes3 libxi6 libxrender1 libxt6 \
        libsm6 libice6 libxkbcommon0 libbsd0 libmd0 libuuid1 libgomp1 \
    && rm -rf /var/lib/apt/lists/*

ENV NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility,graphics \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/clevr-remv
COPY pyproject.toml README.md ./
COPY clevr_remv clevr_remv
COPY blender_scripts blender_scripts
COPY templates templates
COPY scene_configs scene_configs
# [gpu]: ptxas (CUDA 12 line) for doctor --prepare.  The import check fails the build here,
# not on the farm, if a library above is missing.
RUN pip install ".[gpu]" \
    && python -c "import bpy; print('bpy', bpy.app.version_string)"

# Build the Cycles kernels the wheel lacks for these compute capabilities (sm_80 A100,
# sm_90 H100 by default; the wheel already ships sm_30-89 and sm_120 cubins) and install them
# into the image's Cycles add-on.  No GPU is needed at build time.
ARG CUDA_SM=80,90
RUN clevr-remv doctor --prepare --sm "$CUDA_SM"

# Rendering needs no privileges; the shared volume must be writable by this uid (Kubernetes:
# securityContext.fsGroup, see docs/kubernetes.md).
RUN useradd --uid 1000 --create-home render
USER 1000
WORKDIR /home/render
ENTRYPOINT ["clevr-remv"]
CMD ["--help"]
