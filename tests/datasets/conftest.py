from dataset_helpers import fixtures  # noqa: F401  (the fixture, shared by the dataset tests)
