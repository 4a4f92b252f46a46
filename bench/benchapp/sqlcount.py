"""Count the statements a process sends, without any server extension.

Every database connection Django opens in this process gets an execute wrapper that appends one
line per statement (time, pid, first words of the SQL) to a file. Used by the idle-cost measurement.
"""

import os
import threading
import time

from django.db.backends.signals import connection_created

_lock = threading.Lock()
_path = None


def _log(sql: str) -> None:
    line = f"{time.time():.6f} {os.getpid()} {' '.join(str(sql).split())[:4000]}\n"
    with _lock, open(_path, "a") as file:
        file.write(line)


def _wrapper(execute, sql, params, many, context):
    _log(sql)
    return execute(sql, params, many, context)


def _on_connection(sender, connection, **kwargs):
    if _wrapper not in connection.execute_wrappers:
        connection.execute_wrappers.append(_wrapper)


def install(path: str) -> None:
    global _path
    _path = path
    connection_created.connect(_on_connection, weak=False)
