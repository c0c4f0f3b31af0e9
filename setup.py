"""Build configuration that pyproject.toml cannot express; everything else is there.

The schemas live once, in proto/lorax/v1/*.proto. The wheel ships them as
lorax/_proto/lorax/v1/*.proto (where ``lorax.proto_path()`` looks) by mapping the
package ``lorax._proto`` onto the folder proto/, so no copy is committed. The package
list is discovered as ``[tool.setuptools.packages.find]`` would (it cannot add a
mapped package); the ``*.proto`` files are package data in pyproject.toml.
"""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["lorax*"]), "lorax._proto.lorax.v1"],
    package_dir={"lorax._proto": "proto"},
)
