from vlfw.config.loader import load_config, load_project_file, save_config

__all__ = ["load_config", "load_project_file", "save_config"]
