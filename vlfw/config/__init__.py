from vlfw.config.components import component_config
from vlfw.config.loader import load_config, load_project_file, save_config

__all__ = ["component_config", "load_config", "load_project_file", "save_config"]
