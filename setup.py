"""detpre installs on top of an existing Detectron2.

Detectron2 is deliberately *not* in ``install_requires``: no distribution called
``detectron2`` exists on the package index. CPU users get ``sal-detectron2`` through
``make install`` (requirements.txt); GPU clusters build Detectron2 from source. torch is
left out for the same reason: the right build depends on the Detectron2 it must match.
"""

from setuptools import find_packages, setup

setup(
    name="detpre",
    version="0.1.0",
    description="Detectron2 extension for weight initialization studies: training from scratch, "
    "box-domain pre-training, transfer analysis and KAIST multispectral pedestrians.",
    packages=find_packages(include=["detpre", "detpre.*", "kaisteval", "kaisteval.*"]),
    python_requires=">=3.8",
    install_requires=[
        "numpy",
        "opencv-contrib-python-headless",
        # SoCo's selective search (detpre.data.proposals); pinned, see requirements.txt.
        "scikit-image==0.25.2",
        "pycocotools",
        "fvcore",
        "matplotlib",
        "submitit",
    ],
)
