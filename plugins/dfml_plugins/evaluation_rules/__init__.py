"""The built-in evaluation rules, one folder each (`__init__.py`: registration)."""
