"""The roles of web users (a module of its own so the CLI can name them cheaply)."""

ROLES = ("admin", "radiologist", "referring")
#: roles that see every study; the others see what is assigned or shared to them
ROLES_SEEING_ALL = frozenset({"admin", "radiologist"})
