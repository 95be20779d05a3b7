from pathlib import Path

from setuptools import find_packages, setup

version = {}
exec(Path("mongrate/_version.py").read_text(), version)

setup(
    name="mongrate",
    version=version["__version__"],
    description="Alembic-grade versioned schema and data migrations for MongoDB",
    long_description=Path("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["mongrate", "mongrate.*", "app_patch", "app_patch.*"]),
    package_data={
        "mongrate.graph": ["templates/*.tmpl"],
        "mongrate.testing": ["ferretdb/go.mod", "ferretdb/go.sum", "ferretdb/main.go",
                             "javaserver/pom.xml", "javaserver/MongrateJavaServer.java"],
        "app_patch.service": ["static/*"],
    },
    # The engine's whole suite passes on pymongo 4.6.1, the original service's pin.
    install_requires=["pymongo>=4.6,<5", "click>=8.1", "PyYAML>=6"],
    extras_require={
        # Lower bounds: the original service's pins (FastAPI 0.104.1, Pillow 10.0.1, ...).
        "app": [
            "fastapi>=0.104",
            "uvicorn>=0.24",
            "pyjwt>=2.8",
            "pillow>=10.0.1",
            "python-multipart>=0.0.6",
            "httpx>=0.25",
            # The async driver where pymongo has no stable async API (< 4.13): see
            # app_patch/service/driver.py. Unused next to a newer pymongo.
            "motor>=3.3,<4",
        ],
        "test": [
            "pytest>=8",
            "deepdiff>=7",
            "ruff>=0.5",
            "testcontainers>=4",
            "playwright>=1.45",
            "schemathesis>=3.30",
            "pillow-heif>=0.16",
            "alembic>=1.13",  # bench/graph.py's reference: the same graph in Alembic
        ],
    },
    entry_points={
        "console_scripts": ["mongrate=mongrate.cli:main"],
        "pytest11": ["mongrate = mongrate.testing.plugin"],
    },
)
