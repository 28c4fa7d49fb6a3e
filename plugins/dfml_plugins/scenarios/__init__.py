"""The built-in scenarios, one folder each (`__init__.py`: parameters and registration)."""
