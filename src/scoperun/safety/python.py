"""A static scanner for the scripts an agent asks scoperun to run: ADVICE, not a sandbox.

The container (read-only root, no capabilities, one case folder mounted) is the security
boundary. The scanner only catches the obvious and the lightly obfuscated, so that a reviewer
sees them and policy 'block' can refuse them before anything starts.
"""

from __future__ import annotations

import ast
import posixpath
import threading

from scoperun.safety.findings import Finding, Severity, make_finding, outside_allowed, sort_findings, source_lines

__all__ = ["scan_python"]

_SENSITIVE = frozenset({"os", "posix", "subprocess", "sys", "builtins", "shutil", "ctypes", "importlib", "pty",
                        "socket"})


# resolved call name -> rule, for calls that are suspicious whatever their arguments
_CALL_RULES: dict[str, str] = {
    "os.system": "os-system", "os.popen": "os-system", "posix.system": "os-system", "pty.spawn": "os-exec",
    "subprocess.getoutput": "subprocess-shell", "subprocess.getstatusoutput": "subprocess-shell",
    "asyncio.create_subprocess_shell": "subprocess-shell", "eval": "eval-exec", "exec": "eval-exec",
    "compile": "eval-exec", "yaml.unsafe_load": "unsafe-deserialization", "shelve.open": "unsafe-deserialization",
    "joblib.load": "unsafe-deserialization", "pandas.read_pickle": "unsafe-deserialization",
    **{f"{m}.{f}": "unsafe-deserialization" for m in ("pickle", "cPickle", "_pickle", "marshal", "dill", "cloudpickle")
       for f in ("load", "loads", "Unpickler")},
}
_EXEC_PREFIXES = tuple(f"{m}.{p}" for m in ("os", "posix") for p in ("exec", "spawn", "posix_spawn"))
_SHELL_CAPABLE = frozenset(f"subprocess.{n}" for n in ("run", "call", "check_call", "check_output", "Popen"))
_SHELLS = frozenset({"sh", "bash", "zsh", "dash", "ksh"})
_IMPORTERS = frozenset({"__import__", "importlib.import_module", "importlib.__import__"})
_NATIVE = frozenset({"ctypes", "_ctypes", "cffi"})
_PATH_TYPES = frozenset(f"{p}{n}" for p in ("", "pathlib.") for n in ("Path", "PurePath", "PosixPath", "PurePosixPath"))
_PATH_MUTATORS = frozenset({"write_text", "write_bytes", "touch", "mkdir", "unlink", "rmdir", "chmod", "rename",
                            "replace", "symlink_to", "hardlink_to"})
# call name -> indexes of the path arguments it modifies
_FS_MUTATORS: dict[str, tuple[int, ...]] = {
    **{f"os.{n}": (0,) for n in ("remove", "unlink", "rmdir", "removedirs", "chmod", "chown", "lchown", "mkdir",
                                  "makedirs", "truncate", "utime")},
    **{f"os.{n}": (0, 1) for n in ("rename", "renames", "replace")},
    **{f"shutil.{n}": (1,) for n in ("copy", "copy2", "copyfile", "copytree", "copymode")},
    "os.symlink": (1,), "os.link": (1,), "shutil.rmtree": (0,), "shutil.move": (0, 1),
}
_OPEN_FUNCS = frozenset({"open", "io.open", "codecs.open"})


def _const_str(node: ast.AST | None) -> str | None:
    """Fold string constants, `+` concatenation and constant-only f-strings."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _const_str(node.left), _const_str(node.right)
        return left + right if left is not None and right is not None else None
    if isinstance(node, ast.JoinedStr):
        parts = [_const_str(v) for v in node.values]
        return "".join(p for p in parts if p is not None) if None not in parts else None
    return None


def _is_literal_str(node: ast.AST | None) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, str)


def _arg(call: ast.Call, index: int, keyword: str) -> ast.expr | None:
    if index < len(call.args) and not isinstance(call.args[index], ast.Starred):
        return call.args[index]
    return next((k.value for k in call.keywords if k.arg == keyword), None)


def _join(base: str, attr: str) -> str:
    return attr if base == "builtins" else f"{base}.{attr}"  # builtins.eval is eval


def _is_call_to(node: ast.AST, names: tuple[str, ...]) -> bool:
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in names


class _PyScanner:
    """Resolves names through imports and simple assignments, then applies the rules."""

    def __init__(self, source: str, tree: ast.Module) -> None:
        self.lines, self.tree = source_lines(source), tree
        self.aliases: dict[str, str] = {}  # local name -> dotted name it stands for
        self.star_modules: list[str] = []
        # name -> (constant path or None if reassigned, bound to a Path object rather than a str)
        self.consts: dict[str, tuple[str | None, bool]] = {}
        self.found: dict[tuple[str, int, int], Finding] = {}

    def run(self) -> list[Finding]:
        self._collect_bindings()
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                if any(n.split(".")[0] in _NATIVE for n in names):
                    self._add("ctypes", node)
            elif isinstance(node, ast.Call):
                self._check_call(node, self._resolve(node.func) or "")
            elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load) and self._is_namespace(node.value):
                # sys.modules[__name__] is a common, harmless idiom
                if not (isinstance(node.slice, ast.Name) and node.slice.id == "__name__"):
                    self._add("dynamic-attribute", node)
            elif isinstance(node, ast.Attribute) and node.attr == "__dict__" and self._sensitive(node.value):
                self._add("dynamic-attribute", node)
        return list(self.found.values())

    def _add(self, rule: str, node: ast.AST, severity: Severity | None = None) -> None:
        line = getattr(node, "lineno", 1)
        raw = self.lines[line - 1] if 0 < line <= len(self.lines) else ""
        # ast columns are UTF-8 byte offsets; "Müller" earlier on the line must not shift them
        col = len(raw.encode()[: getattr(node, "col_offset", 0)].decode(errors="ignore")) + 1
        finding = make_finding(rule, self.lines, line, col)
        if severity:
            finding = finding.model_copy(update={"severity": severity})
        self.found.setdefault((rule, line, col), finding)

    def _collect_bindings(self) -> None:
        """Record imports and `name = <module/function/path>` assignments in source order."""
        nodes = [n for n in ast.walk(self.tree) if isinstance(n, ast.Import | ast.ImportFrom | ast.Assign)]
        for node in sorted(nodes, key=lambda n: (n.lineno, n.col_offset)):
            if isinstance(node, ast.Import):
                for a in node.names:
                    top = a.name.split(".")[0]
                    self.aliases[a.asname or top] = a.name if a.asname else top
            elif isinstance(node, ast.ImportFrom):
                if node.level or not node.module:
                    continue  # relative imports are the script's own modules
                for a in node.names:
                    if a.name == "*":
                        self.star_modules.append(node.module)
                    else:
                        self.aliases[a.asname or a.name] = f"{node.module}.{a.name}"
            elif len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                name = node.targets[0].id
                # `run = sp.run`, `o = __import__("os")`, `f = getattr(os, "system")`
                if (target := self._resolve(node.value)) and target != name:
                    self.aliases[name] = target
                obj = self._path_literal(node.value, path_only=True)
                value = obj or self._path_literal(node.value)
                self.consts[name] = (None, False) if name in self.consts else (value, obj is not None)

    def _resolve(self, node: ast.AST) -> str | None:
        """The dotted name an expression stands for (`sp.run` -> `subprocess.run`), if known."""
        if isinstance(node, ast.Name):
            if node.id in self.aliases:
                return self.aliases[node.id]
            for module in self.star_modules:  # `from os import *; system(...)`
                if (full := f"{module}.{node.id}") in _CALL_RULES or full in _FS_MUTATORS:
                    return full
            return "builtins" if node.id == "__builtins__" else node.id
        if isinstance(node, ast.Attribute):
            base = self._resolve(node.value)
            return _join(base, node.attr) if base else None
        if isinstance(node, ast.Call):
            func = self._resolve(node.func)
            if func in _IMPORTERS:
                name = _const_str(_arg(node, 0, "name"))
                # __import__("os.path") returns os; import_module returns os.path
                return name.split(".")[0] if name and func == "__import__" else name
            if func == "getattr" and len(node.args) >= 2:
                base, attr = self._resolve(node.args[0]), _const_str(node.args[1])
                return _join(base, attr) if base and attr else None
            return None
        if isinstance(node, ast.Subscript) and (key := _const_str(node.slice)) is not None:
            if self._resolve(node.value) == "sys.modules":
                return key
            if _is_call_to(node.value, ("globals", "locals")):
                return self._resolve(ast.Name(id=key))
            owner = self._namespace_owner(node.value)
            return _join(owner, key) if owner else None
        return None

    def _namespace_owner(self, node: ast.AST) -> str | None:
        """For `vars(os)` or `os.__dict__`, the module whose namespace it is."""
        if isinstance(node, ast.Call) and self._resolve(node.func) == "vars" and node.args:
            return self._resolve(node.args[0])
        if isinstance(node, ast.Attribute) and node.attr == "__dict__":
            return self._resolve(node.value)
        return None

    def _is_namespace(self, node: ast.AST) -> bool:
        """True for globals()/locals(), sys.modules, builtins and a sensitive module's dict."""
        if _is_call_to(node, ("globals", "locals")) or self._resolve(node) in ("sys.modules", "builtins"):
            return True
        owner = self._namespace_owner(node)
        return owner is not None and owner.split(".")[0] in _SENSITIVE

    def _sensitive(self, node: ast.AST) -> bool:
        name = self._resolve(node)
        return name is not None and name.split(".")[0] in _SENSITIVE

    def _check_call(self, node: ast.Call, name: str) -> None:
        if rule := _CALL_RULES.get(name):
            self._add(rule, node, "medium" if name == "compile" else None)
        elif name.startswith(_EXEC_PREFIXES):
            self._add("os-exec", node)
        elif name in _SHELL_CAPABLE:
            shell = next((k.value for k in node.keywords if k.arg == "shell"), None)
            argv = node.args[0] if node.args else None
            # ["bash", "-c", cmd] is shell=True spelled differently
            first = argv.elts[0] if isinstance(argv, ast.List | ast.Tuple) and argv.elts else None
            if (shell is not None and not (isinstance(shell, ast.Constant) and not shell.value)) \
                    or posixpath.basename(_const_str(first) or "") in _SHELLS:
                self._add("subprocess-shell", node)
        elif name in ("yaml.load", "yaml.load_all"):
            loader = _arg(node, 1, "Loader")
            if not (self._resolve(loader) or "" if loader else "").endswith(("SafeLoader", "BaseLoader")):
                self._add("unsafe-deserialization", node)
        elif name in _IMPORTERS:
            arg = _arg(node, 0, "name")
            if not _is_literal_str(arg):
                self._add("dynamic-import", node)
            if (_const_str(arg) or "").split(".")[0] in _NATIVE:
                self._add("ctypes", node)
        elif name == "getattr" and len(node.args) >= 2 and self._sensitive(node.args[0]):
            target = self._resolve(node)
            if not _is_literal_str(node.args[1]) or target in _CALL_RULES or target in _IMPORTERS:
                self._add("dynamic-attribute", node)
        elif (name == "vars" and node.args and self._sensitive(node.args[0])) or (
                isinstance(node.func, ast.Attribute) and node.func.attr == "get"
                and self._is_namespace(node.func.value)):
            self._add("dynamic-attribute", node)
        self._check_write(node, name)

    def _check_write(self, node: ast.Call, name: str) -> None:
        paths: list[ast.AST | None] = []
        if name in _OPEN_FUNCS and any(c in (_const_str(_arg(node, 1, "mode")) or "r") for c in "wax+"):
            paths.append(_arg(node, 0, "file"))
        elif name in _FS_MUTATORS:
            paths.extend(node.args[i] for i in _FS_MUTATORS[name] if i < len(node.args))
        elif isinstance(node.func, ast.Attribute):
            method, receiver = node.func.attr, node.func.value
            writes = method == "open" and any(c in (_const_str(_arg(node, 0, "mode")) or "r") for c in "wax+")
            if (method in _PATH_MUTATORS or writes) and self._path_literal(receiver, True):
                paths.append(receiver)
                if method in ("rename", "replace"):
                    paths.append(_arg(node, 0, "target"))
        if any(outside_allowed(self._path_literal(p) or "") for p in paths):
            self._add("absolute-write", node)

    def _path_literal(self, node: ast.AST | None, path_only: bool = False) -> str | None:
        """A statically known path: a string, Path("/x") / "y", or a constant-path name.

        For `"/etc/" + name` or f"/etc/{name}" only the known directory is returned.
        """
        if isinstance(node, ast.Call) and (func := self._resolve(node.func)) in _PATH_TYPES | {"os.path.join"}:
            parts = [self._path_literal(a) for a in node.args]
            if not parts or None in parts or (path_only and func == "os.path.join"):
                return None  # os.path.join returns a str, which has no write_text
            return posixpath.join(*parts)  # type: ignore[arg-type]
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            left, right = self._path_literal(node.left), self._path_literal(node.right)
            return posixpath.join(left, right) if left is not None and right is not None else None
        if isinstance(node, ast.Name):
            path, is_object = self.consts.get(node.id, (None, False))
            return path if is_object or not path_only else None
        if path_only or node is None:
            return None  # "text".write_text(...) is not a path method
        if (text := _const_str(node)) is not None:
            return text
        head = node.left if isinstance(node, ast.BinOp) else node.values[0] if isinstance(node, ast.JoinedStr) else None
        prefix = _const_str(head) or ""
        # "/" + x could be anything; "/etc/" + x is somewhere in /etc
        return prefix.rsplit("/", 1)[0] or None if "/" in prefix else None


# CPython 3.11 can fail ("AST constructor recursion depth mismatch") when threads parse at once.
_PARSE_LOCK = threading.Lock()


def scan_python(source: str) -> list[Finding]:
    """Scan Python source; a syntax error becomes one low `syntax-error` finding."""
    try:
        with _PARSE_LOCK:
            tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError) as exc:
        finding = make_finding("syntax-error", source_lines(source), getattr(exc, "lineno", None) or 1,
                           getattr(exc, "offset", None) or 1)
        why = f"the script does not parse ({getattr(exc, 'msg', None) or exc})"
        return [finding.model_copy(update={"message": why})]
    try:
        return sort_findings(_PyScanner(source, tree).run())
    except RecursionError:  # parseable but nested beyond what the recursive resolver follows
        return [make_finding("too-complex", source_lines(source), 1, 1)]
