# Temporary: the loader moved to the purchases.load package (this re-export goes once every caller moved).
from purchases.load import *  # noqa: F401,F403
from purchases.load import __all__  # noqa: F401
