"""The benchmarks' workload: `services/devkit/workload/` (moved there so tests need not import bench/).

    from workload import generate            # bench scripts (bench/ on sys.path)
"""

from services.devkit.workload import TOPIC_BY_TYPE, generate, write_jsonl

__all__ = ["generate", "write_jsonl", "TOPIC_BY_TYPE"]
