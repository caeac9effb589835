"""Race suites: named scenarios over the kernel model and the mutants each must catch.

Importing this package registers every built-in suite.
"""

from mmemu.races import demo  # noqa: F401
from mmemu.races import locks  # noqa: F401
from mmemu.races import mm  # noqa: F401
from mmemu.races import modern  # noqa: F401
from mmemu.races import notifier  # noqa: F401
from mmemu.races import pagecache  # noqa: F401
