"""The built-in synthetic Shapes world, written in every benchmark's native format.

`ensure_world(size, seed)` returns the root of a cached world (generating it on first use);
`benchmark_paths(root, name)` tells a dataset builder where its files are.
"""

from vlfw.world.cache import ensure_world, read_manifest, world_dir
from vlfw.world.generate import SIZES, generate_world
from vlfw.world.layout import BENCHMARKS, benchmark_paths

__all__ = ["ensure_world", "generate_world", "benchmark_paths", "read_manifest", "world_dir", "SIZES", "BENCHMARKS"]
