# The compiled registry.plain_forms.python_plain_forms (see _plain_forms.c).
from typing import Any

def plain_forms(
    records: list[Any],
    start: int,
    admin_forms: dict[str, bytes],
    now: int,
    texts: list[str],
    forms: list[bytes],
) -> int: ...
