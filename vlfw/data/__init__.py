from vlfw.data.batch import Batch, Sample, collate, pad_stack

__all__ = ["Batch", "Sample", "collate", "pad_stack"]
