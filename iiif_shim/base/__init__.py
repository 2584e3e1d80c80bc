"""The bottom floor: the one exception tree (``errors.py``), the settings schema every component
declares its settings with (``schema.py``), and small facts and helpers every floor may use: the
CPUs this process may run on (``machine.py``), the natural order of names (``text.py``)."""
