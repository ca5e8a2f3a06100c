"""Turning a mailing into the exact bytes each recipient receives.

When sending starts the template is frozen into a MailingVersion: the sandboxed Jinja sources with
every tracked link already rewritten to a click URL, plus everything constant in the MIME message.
Per recipient only what differs is rendered (subject, HTML, text) and slotted into a prebuilt
skeleton, so the build costs a few Jinja renders and two quoted-printable encodings.

The same function rebuilds a message later from the version, the recipient's stored merge data,
its Message-ID and hand-off time, so staff can see byte-for-byte what a client received.
"""

from __future__ import annotations

import binascii
import copy
import email.base64mime
import email.quoprimime
import email.utils
import functools
import json
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from email.header import Header
from functools import lru_cache
from string import Formatter
from typing import Any

import markupsafe
from jinja2 import Environment, Template, TemplateSyntaxError, Undefined, meta, nodes, pass_context
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.nodes import EvalContext
from jinja2.runtime import Context, Macro
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import generate_lorem_ipsum

from app.domain.eligibility import ascii_address

# Placeholder for the recipient token: rendered templates carry it and it is swapped for the real
# token afterwards, which is far cheaper than passing per-recipient URLs through Jinja.
TOKEN_SLOT = "SBTOKEN0SLOT"
UNSUBSCRIBE_VAR = "unsubscribe_url"
PREFERENCES_VAR = "preferences_url"


class TemplateProblem(ValueError):
    """A template that cannot compile or render; the message says where."""


# --------------------------------------------------------------------------------------------
# Limits: a template is code a staff member typed, run once per recipient inside a worker or a web
# request. The sandbox keeps it away from Python's internals; these limits keep it from tying up
# the process. They are counted per render (one subject, HTML or text body for one recipient).
# --------------------------------------------------------------------------------------------

MAX_LOOP_ITERATIONS = 10_000  # loop turns per render, nested loops counted together
MAX_CALLS = 10_000  # function, method and macro calls per render
MAX_MACRO_DEPTH = 50  # macros calling macros (a macro calling itself without end stops here)
MAX_OUTPUT_CHARS = 2_000_000  # characters of rendered output, and the largest value it may make
MAX_WORK_CHARS = 20_000_000  # characters of text (and list items) a render may make in all
MAX_ITEMS = 100_000  # items in a list or range a template may make
MAX_WIDTH = 10_000  # a padding, indent, wrap or format width
MAX_INT_BITS = 4_096  # integers a template computes (2 ** 4096 is a 1,234-digit number)
MAX_RENDER_SECONDS = 2.0


class TemplateLimit(SecurityError):
    """A template went past one of the render limits; the message says which."""


class _Budget:
    """What one render has used so far."""

    __slots__ = ("calls", "deadline", "depth", "iterations", "produced")

    def __init__(self) -> None:
        self.iterations = 0
        self.calls = 0
        self.depth = 0
        self.produced = 0
        self.deadline = time.monotonic() + MAX_RENDER_SECONDS

    def check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise TemplateLimit(f"the template took longer than {MAX_RENDER_SECONDS:g} seconds"
                                " to render for one recipient")

    def iterate(self, static_chars: int) -> None:
        self.iterations += 1
        if self.iterations > MAX_LOOP_ITERATIONS:
            raise TemplateLimit(f"the template's loops run more than {MAX_LOOP_ITERATIONS:,} times"
                                " for one recipient (nested loops multiply)")
        self.produce(static_chars)
        self.check_time()

    def call(self) -> None:
        self.calls += 1
        if self.calls > MAX_CALLS:
            raise TemplateLimit(f"the template makes more than {MAX_CALLS:,} calls for one"
                                " recipient")
        self.check_time()

    def produce(self, chars: int) -> None:
        self.produced += chars
        if self.produced > MAX_WORK_CHARS:
            raise TemplateLimit(f"the template builds more than {MAX_WORK_CHARS:,} characters of"
                                " text for one recipient")


_BUDGET: ContextVar[_Budget | None] = ContextVar("sendboard_template_budget", default=None)


def _budget() -> _Budget:
    """The running render's budget; outside a render (compile-time folding) a fresh one."""
    return _BUDGET.get() or _Budget()


def _too_large() -> TemplateLimit:
    return TemplateLimit(f"the template would produce more than {MAX_OUTPUT_CHARS:,} characters"
                         " for one recipient")


def _size_over(value: Any, limit: int) -> bool:
    """True if printing `value` would take more than `limit` characters (stops counting early).

    Containers are walked without being printed; each item counts at least one character, so
    the walk itself never does more than `limit` steps, even over a list repeating one list.
    """
    total = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str | bytes):
            total += len(item) + 1
        elif isinstance(item, range):
            total += len(item) * 2
        elif isinstance(item, dict):
            total += 2 * len(item) + 1
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            total += 3 * len(item) + 1  # at least a character and a separator per item
            if total <= limit:
                stack.extend(i for i in item if not isinstance(i, int | float))
        elif isinstance(item, int) and not isinstance(item, bool):
            total += item.bit_length() // 3 + 1
        else:
            total += 1
        if total > limit:
            return True
    return False


def _check_value(value: Any) -> Any:
    """A value a template made: refused when it is larger than a render may produce, and counted
    against the render's budget (so making many large values is refused too)."""
    if isinstance(value, str | bytes):
        if len(value) > MAX_OUTPUT_CHARS:
            raise _too_large()
        _budget().produce(len(value))
    elif isinstance(value, list | tuple):
        if len(value) > MAX_ITEMS:
            raise TemplateLimit(f"the template makes a list of more than {MAX_ITEMS:,} items")
        _budget().produce(len(value))
    elif isinstance(value, Iterator):
        return _checked_items(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        if value.bit_length() > MAX_INT_BITS:
            raise TemplateLimit("the template computes a number too large to use")
    return value


def _checked_items(items: Iterator[Any]) -> Iterator[Any]:
    """A lazy sequence (a filter's `map`, `select`...) whose items are checked as they come."""
    for item in items:
        yield _check_value(item)


def _check_width(width: Any, what: str = "width") -> None:
    if isinstance(width, int) and width > MAX_WIDTH:
        raise TemplateLimit(f"a {what} of {width:,} is more than the {MAX_WIDTH:,} allowed")


_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[-+ #0]*(\*|\d+)?(?:\.(\*|\d+))?")


def _check_percent_format(fmt: str, args: Any) -> None:
    """Refuse a `%` format whose widths would build an enormous string."""
    star = False
    for match in _PERCENT_SPEC.finditer(fmt):
        for part in match.groups():
            if part == "*":
                star = True
            elif part:
                _check_width(int(part))
    if star:
        for arg in args if isinstance(args, tuple) else (args,):
            _check_width(arg)


def _check_brace_format(fmt: str) -> None:
    """Refuse a `str.format` pattern whose widths would build an enormous string."""
    try:
        fields = list(Formatter().parse(fmt))
    except ValueError:
        return  # str.format raises the same error, with its own message
    for _, _, spec, _ in fields:
        if not spec:
            continue
        if "{" in spec:
            raise TemplateLimit("a format width taken from a variable is not allowed")
        for number in re.findall(r"\d+", spec):
            _check_width(int(number))


def _mul_size(seq: Any, times: Any) -> None:
    if isinstance(times, bool) or not isinstance(times, int):
        return
    if isinstance(seq, str | bytes):
        if len(seq) * times > MAX_OUTPUT_CHARS:
            raise _too_large()
    elif isinstance(seq, list | tuple) and len(seq) * times > MAX_ITEMS:
        raise TemplateLimit(f"the template makes a list of more than {MAX_ITEMS:,} items")


def _check_binop(operator: str, left: Any, right: Any) -> None:
    """Refuse an operation whose result would be too large, before Python computes it."""
    if operator == "*":
        _mul_size(left, right)
        _mul_size(right, left)
        if (isinstance(left, int) and isinstance(right, int)
                and left.bit_length() + right.bit_length() > MAX_INT_BITS):
            raise TemplateLimit("the template computes a number too large to use")
    elif operator == "**":
        if (isinstance(left, int) and isinstance(right, int) and right > 0
                and abs(left) > 1 and abs(left).bit_length() * right > MAX_INT_BITS):
            raise TemplateLimit("the template computes a number too large to use")
    elif operator == "+":
        if (isinstance(left, str | list | tuple) and isinstance(right, str | list | tuple)):
            limit = MAX_OUTPUT_CHARS if isinstance(left, str) else MAX_ITEMS
            if len(left) + len(right) > limit:
                raise _too_large()
    elif operator == "%" and isinstance(left, str):
        _check_percent_format(left, right)


def _check_str_method(method: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Refuse a string method call whose result would be enormous, before it runs."""
    method = getattr(method, "__wrapped__", method)  # the sandbox wraps str.format
    text = getattr(method, "__self__", None)
    if not isinstance(text, str):
        return
    name = getattr(method, "__name__", "")
    if name in ("center", "ljust", "rjust", "zfill") and args:
        _check_width(args[0])
    elif name == "expandtabs":
        size = (args[0] if args else kwargs.get("tabsize", 8))
        if isinstance(size, int) and size * text.count("\t") + len(text) > MAX_OUTPUT_CHARS:
            raise _too_large()
    elif name == "replace" and len(args) >= 2:
        old, new = args[0], args[1]
        if isinstance(old, str) and isinstance(new, str) and len(new) > len(old):
            count = text.count(old) if old else len(text) + 1
            if len(text) + count * (len(new) - len(old)) > MAX_OUTPUT_CHARS:
                raise _too_large()
    elif name == "join" and args:
        _check_join(text, args[0])
    elif name in ("format", "format_map"):
        _check_brace_format(text)


def _check_join(separator: Any, items: Any) -> None:
    if isinstance(items, list | tuple | str | range):
        sep = len(separator) if isinstance(separator, str) else 1
        if len(items) * sep > MAX_OUTPUT_CHARS or _size_over(items, MAX_OUTPUT_CHARS):
            raise _too_large()


def _limited_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """A built-in filter with the render limits applied to its arguments and its result."""

    def limited(*args: Any, **kwargs: Any) -> Any:
        # Filters marked pass_context/pass_environment get that first; the value comes next.
        values = [a for a in args if not isinstance(a, Environment | Context | EvalContext)]
        value, params = (values[0], values[1:]) if values else (None, [])
        if name in ("center", "indent", "wordwrap", "truncate"):
            for width in (*params, *kwargs.values()):
                _check_width(width)
        elif name in ("slice", "batch") and params:
            _check_width(params[0], "count")
        elif name == "format" and isinstance(value, str):
            _check_percent_format(value, tuple(params))
        elif name == "replace" and len(params) >= 2 and isinstance(value, str):
            _check_str_method(value.replace, tuple(params[:2]), {})
        elif name == "join":
            _check_join(params[0] if params else kwargs.get("d", ""), value)
        elif name == "sum" and isinstance(value, list | tuple):
            items = sum(len(v) for v in value if isinstance(v, list | tuple | str))
            if items > MAX_ITEMS:
                raise TemplateLimit(f"the template makes a list of more than {MAX_ITEMS:,} items")
        elif name in ("string", "list", "tojson", "pprint", "unique", "sort", "map",
                      "select", "reject", "dictsort", "urlize", "xmlattr", "items"):
            if _size_over(value, MAX_OUTPUT_CHARS):
                raise _too_large()
        return _check_value(func(*args, **kwargs))

    return functools.update_wrapper(limited, func)


def _limited_range(*args: int) -> range:
    numbers = range(*args)
    if len(numbers) > MAX_LOOP_ITERATIONS:
        raise TemplateLimit(f"range() of {len(numbers):,} numbers: at most"
                            f" {MAX_LOOP_ITERATIONS:,} (the loop limit) are allowed")
    return numbers


def _limited_lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:
    _check_width(n * max, "placeholder text length")
    return str(generate_lorem_ipsum(n=n, html=html, min=min, max=max))


@pass_context
def _counted_loop(context: Context, iterable: Any, static_chars: int) -> Iterator[Any]:
    """What a `{% for %}` loop walks: its items, each one counted against the render's budget."""
    budget = _budget()
    for item in iterable:
        budget.iterate(static_chars)
        yield item


def _finalize(value: Any) -> Any:
    """Every `{{ ... }}` value on its way to the output: counted, and refused if too large.

    Short strings are not counted (the common case, kept cheap): what they can add up to is
    bounded by the loop limit, and the output limit applies to the whole render anyway.
    """
    if isinstance(value, str):
        if len(value) > 256:
            _budget().produce(len(value))
    elif value is not None and not isinstance(value, int | float | Undefined):
        if _size_over(value, MAX_OUTPUT_CHARS):
            raise _too_large()
        _budget().produce(len(str(value)))
    return value


def _static_chars(body: list[nodes.Node]) -> int:
    """Characters of plain text a loop body writes on each turn (nested loops count their own)."""
    total = 0
    stack: list[nodes.Node] = list(body)
    while stack:
        node = stack.pop()
        if isinstance(node, nodes.TemplateData):
            total += len(node.data)
        elif not isinstance(node, nodes.For | nodes.Macro | nodes.CallBlock):
            stack.extend(node.iter_child_nodes())
    return total


class _LimitedCodeGenerator(CodeGenerator):
    """Compiles templates so loops and `~` concatenation report to the render's budget."""

    def visit_Template(self, node: nodes.Template, frame: Frame | None = None) -> None:
        # Every loop walks its items through the counting filter (added before the filters
        # used by the template are collected).
        for loop in node.find_all(nodes.For):
            loop.iter = nodes.Filter(loop.iter, "sendboard_counted_loop",
                                     [nodes.Const(_static_chars(loop.body))], [], None, None,
                                     lineno=loop.lineno)
        super().visit_Template(node, frame)

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.checked_value(")
        super().visit_Concat(node, frame)
        self.write(")")


def _substitution_plan(tree: nodes.Template) -> tuple[str, tuple[tuple[str, str], ...]] | None:
    """A template that is only text and `{{ variable }}` outputs, as its first text and then
    each variable's name with the text after it; None for anything else (a filter, a tag, an
    expression). Whitespace control has already trimmed the texts when the template was parsed.
    """
    texts: list[str] = []
    names: list[str] = []
    pending: list[str] = []
    for node in tree.body:
        if not isinstance(node, nodes.Output):
            return None
        for child in node.nodes:
            if isinstance(child, nodes.TemplateData):
                pending.append(child.data)
            elif isinstance(child, nodes.Name) and child.ctx == "load":
                texts.append("".join(pending))
                names.append(child.name)
                pending = []
            else:
                return None
    texts.append("".join(pending))
    return texts[0], tuple(zip(names, texts[1:], strict=True))


_MISSING = object()
_HTML_SPECIAL = re.compile("[&<>'\"]")  # what autoescaping replaces (markupsafe.escape)


class _LimitedTemplate(Template):
    """A template whose render() runs under a fresh budget and stops past the output limit."""

    _flat_globals: dict[str, Any] | None = None
    # Set when the template only substitutes variables (_substitution_plan): render() then fills
    # it in directly when every value is a plain string or integer, with the same result.
    _plan: tuple[str, tuple[tuple[str, str], ...]] | None = None

    def _fill(self, variables: dict[str, Any]) -> str | None:
        """The output of a substitution-only template, or None when a value needs the full
        render (missing, not a plain string or integer, or an output past the limit)."""
        assert self._plan is not None
        first, slots = self._plan
        escape = self.environment.autoescape
        parts = [first]
        for name, text in slots:
            value = variables.get(name, _MISSING)
            kind = type(value)
            if kind is int:
                value = str(value)
            elif kind is not str:
                return None
            if escape and _HTML_SPECIAL.search(value):
                value = str(markupsafe.escape(value))
            parts.append(value)
            parts.append(text)
        out = "".join(parts)
        return out if len(out) <= MAX_OUTPUT_CHARS else None

    def _context(self, variables: dict[str, Any]) -> Context:
        """What `new_context` makes, with the globals copied out of their ChainMap once per
        template instead of on every render (a sender renders three templates per message; the
        sandbox's globals are set when its environment is made and never change after)."""
        flat = self._flat_globals
        if flat is None:
            flat = self._flat_globals = dict(self.globals)
        return self.environment.context_class(self.environment, {**flat, **variables},
                                              self.name, self.blocks, globals=flat)

    def render(self, *args: Any, **kwargs: Any) -> str:
        variables = dict(*args, **kwargs)
        if self._plan is not None:
            filled = self._fill(variables)
            if filled is not None:
                return filled
        token = _BUDGET.set(_Budget())
        try:
            context = self._context(variables)
            try:
                parts: list[str] = []
                size = 0
                for part in self.root_render_func(context):
                    size += len(part)
                    if size > MAX_OUTPUT_CHARS:
                        raise _too_large()
                    parts.append(part)
                return "".join(parts)
            except RecursionError:
                raise TemplateLimit("the template's macros or loops call themselves too deeply"
                                    ) from None
            except Exception:
                self.environment.handle_exception()
        finally:
            _BUDGET.reset(token)


class LimitedSandbox(ImmutableSandboxedEnvironment):
    """The sandbox every mailing template runs in: no Python internals, and bounded work.

    Loops, calls, macro nesting, the size of every value made (strings, lists, numbers), the
    size of the output and the time of one render are all limited (see the MAX_* constants);
    going past one raises TemplateLimit with what was exceeded, which callers report as a
    TemplateProblem. Operators that could allocate without bound (`*`, `+`, `%`, `**`) are
    checked before they run.
    """

    intercepted_binops = frozenset({"*", "+", "%", "**"})
    code_generator_class = _LimitedCodeGenerator
    template_class = _LimitedTemplate

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, finalize=_finalize, **kwargs)
        self.globals["range"] = _limited_range
        self.globals["lipsum"] = _limited_lipsum
        self.filters = {name: _limited_filter(name, func) for name, func in self.filters.items()}
        self.filters["sendboard_counted_loop"] = _counted_loop

    def from_string(self, source: str | nodes.Template, globals: Any = None,  # noqa: A002
                    template_class: type[Template] | None = None) -> Template:
        tree = self.parse(source) if isinstance(source, str) else source
        plan = _substitution_plan(tree)  # before compiling, which rewrites loops in the tree
        template = super().from_string(tree, globals, template_class)
        if isinstance(template, _LimitedTemplate) and not callable(self.autoescape):
            template._plan = plan
        return template

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        _check_binop(operator, left, right)
        return _check_value(super().call_binop(context, operator, left, right))

    def call(__self, __context: Context, __obj: Any,  # noqa: N805
             *args: Any, **kwargs: Any) -> Any:
        budget = _budget()
        budget.call()
        _check_str_method(__obj, args, kwargs)
        if isinstance(__obj, Macro):
            budget.depth += 1
            try:
                if budget.depth > MAX_MACRO_DEPTH:
                    raise TemplateLimit(f"macros call each other more than {MAX_MACRO_DEPTH}"
                                        " deep (a macro calling itself without end?)")
                return _check_value(super().call(__context, __obj, *args, **kwargs))
            finally:
                budget.depth -= 1
        return _check_value(super().call(__context, __obj, *args, **kwargs))

    @staticmethod
    def checked_value(value: Any) -> Any:
        return _check_value(value)


def _environment(autoescape: bool) -> LimitedSandbox:
    # Undefined variables render empty: a contact missing a custom field still gets the mail.
    return LimitedSandbox(autoescape=autoescape, keep_trailing_newline=True)


_HTML_ENV = _environment(True)
_TEXT_ENV = _environment(False)


def check_template(source: str, what: str) -> None:
    """Refuse a template that cannot compile, with the line of the problem."""
    try:
        _HTML_ENV.parse(source)
    except TemplateSyntaxError as exc:
        raise TemplateProblem(f"{what}, line {exc.lineno}: {exc.message}") from exc


# What every recipient's context holds besides the contact's custom fields (MessageBuilder.context).
STANDARD_VARS = ("name", "email", UNSUBSCRIBE_VAR, PREFERENCES_VAR, "fields")
# Either link lets a recipient stop all mail: the preferences page has "leave all".
UNSUBSCRIBE_LINK_VARS = frozenset({UNSUBSCRIBE_VAR, PREFERENCES_VAR})
UNSUBSCRIBE_HINT = ('Add {{ unsubscribe_url }} to it, e.g. <a href="{{ unsubscribe_url }}">'
                    'Unsubscribe</a> in the HTML body and "Unsubscribe: {{ unsubscribe_url }}"'
                    ' in the text part.')


def template_variables(source: str) -> frozenset[str]:
    """The variables a template reads from its recipient's context, found in its syntax tree
    (names it sets itself and the sandbox's globals such as range are left out; a variable in a
    comment does not count). Raises TemplateProblem when the template does not compile."""
    if not source:
        return frozenset()
    try:
        tree = _HTML_ENV.parse(source)
    except TemplateSyntaxError as exc:
        raise TemplateProblem(f"line {exc.lineno}: {exc.message}") from exc
    return frozenset(meta.find_undeclared_variables(tree) - set(_HTML_ENV.globals))


def has_unsubscribe_link(source: str) -> bool:
    """True when the template uses {{ unsubscribe_url }} (or {{ preferences_url }})."""
    return bool(template_variables(source) & UNSUBSCRIBE_LINK_VARS)


def bodies_without_unsubscribe(html_body: str, text_body: str) -> list[str]:
    """The parts a recipient may read that carry no unsubscribe link: "HTML body" and/or
    "text part". A part left empty is not sent, so it needs none; a mailing with no body at all
    lacks one in both. Raises TemplateProblem when a body does not compile."""
    parts = [(what, body) for what, body in (("HTML body", html_body), ("text part", text_body))
             if body and body.strip()]
    if not parts:
        return ["HTML body", "text part"]
    return [what for what, body in parts if not has_unsubscribe_link(body)]


def unknown_variables(sources: list[str], custom_fields: set[str] | frozenset[str]) -> list[str]:
    """The variables the templates read that no recipient has: not a standard variable and not
    among `custom_fields` (the custom field names present on contacts). They render as blank.
    A template that does not compile is skipped (check_template reports it)."""
    used: set[str] = set()
    for source in sources:
        try:
            used |= template_variables(source)
        except TemplateProblem:
            continue
    return sorted(used - set(STANDARD_VARS) - set(custom_fields))


HREF_RE = re.compile(r"""(<a\b[^>]*?\bhref\s*=\s*)(["'])(.*?)\2""", re.IGNORECASE | re.DOTALL)


def trackable(url: str) -> bool:
    """Only plain web links are tracked: not mailto:, anchors, Jinja expressions or unsubscribe."""
    url = url.strip()
    if "{{" in url or "{%" in url:
        return False
    return url.lower().startswith(("http://", "https://"))


def with_utm(url: str, utm: dict[str, str]) -> str:
    """Add the mailing's UTM tags to a link, keeping any the link already has."""
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    tags = {f"utm_{k}": v for k, v in utm.items() if v}
    if not tags:
        return url
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    present = {k for k, _ in query}
    query += [(k, v) for k, v in tags.items() if k not in present]
    return urlunsplit(parts._replace(query=urlencode(query)))


def collect_links(html: str) -> list[str]:
    """The distinct trackable hrefs of an HTML body as written, in order of first appearance.

    They are returned as they stand in the source (entities included), which is what
    rewrite_links matches; html.unescape gives the URL a browser would follow.
    """
    seen: dict[str, None] = {}
    for match in HREF_RE.finditer(html):
        link = match.group(3).strip()
        if trackable(link):
            seen.setdefault(link, None)
    return list(seen)


def rewrite_links(html: str, link_ids: dict[str, int], base_url: str) -> str:
    """Point every tracked link at the click endpoint; other hrefs stay as written."""

    def replace(match: re.Match[str]) -> str:
        url = match.group(3).strip()
        link_id = link_ids.get(url)
        if link_id is None:
            return match.group(0)
        return f"{match.group(1)}{match.group(2)}{base_url}/t/c/{TOKEN_SLOT}/{link_id}{match.group(2)}"

    return HREF_RE.sub(replace, html)


def add_open_pixel(html: str, base_url: str) -> str:
    pixel = (
        f'<img src="{base_url}/t/o/{TOKEN_SLOT}" width="1" height="1" alt="" '
        'style="display:block;border:0;width:1px;height:1px">'
    )
    lower = html.lower()
    at = lower.rfind("</body>")
    if at == -1:
        return html + pixel
    return html[:at] + pixel + html[at:]


def _encode_header(value: str) -> str:
    """A header value as 7-bit text: RFC 2047 encoded when it is not plain ASCII."""
    if value.isascii() and "\n" not in value and "\r" not in value:
        return value
    value = value.replace("\r", " ").replace("\n", " ")
    word = _one_encoded_word(value)
    return word if word is not None else Header(value, "utf-8").encode(maxlinelen=998)


def _one_encoded_word(value: str) -> str | None:
    """What Header(value, "utf-8").encode(maxlinelen=998) gives a value that fits one encoded
    word: the whole value in whichever of base64 and quoted-printable is shorter (quoted-printable
    on a tie), as the email package chooses. Header finds that out a character at a time; None
    for anything it would split (a long value, or one with a line break of any kind)."""
    if value.splitlines() != [value]:
        return None
    try:
        raw = value.encode("utf-8")
    except UnicodeEncodeError:
        return None
    b64, qp = email.base64mime.header_length(raw), email.quoprimime.header_length(raw)
    if min(b64, qp) > 900:  # Header splits past 998 characters less the encoded word's chrome
        return None
    if b64 < qp:
        return email.base64mime.header_encode(raw, "utf-8")
    return email.quoprimime.header_encode(raw, "utf-8")


_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def _format_address(name: str, address: str) -> str:
    """A display name and address for a header. Control characters in the name (a line break
    typed into a contact's name) become spaces, so a name can never start a header of its own;
    an international domain is written in its ASCII form."""
    address = ascii_address(address)
    name = _CONTROL.sub(" ", name or "").strip()
    if not name:
        return address
    if name.isascii():
        if not email.utils.specialsre.search(name):  # formataddr's own test for quoting
            return f"{name} <{address}>"
        return email.utils.formataddr((name, address))
    return f"{_encode_header(name)} <{address}>"


@functools.lru_cache(maxsize=4)
def _date_header(sent_at: datetime) -> str:
    """The Date header's value (RFC 5322); a sender's messages share a few whole seconds."""
    return email.utils.format_datetime(sent_at)


MAX_LINE = 998  # characters of a line without its CRLF (RFC 5321 section 4.5.3.1.6)
SEVEN_BIT = "7bit-when-possible"  # a frozen version's body encoding (see _body)


def _body(text: str, seven_bit: bool) -> tuple[str, bytes]:
    """A body part's transfer encoding and bytes, with CRLF line ends (what SMTP carries).

    With `seven_bit` (versions frozen with SEVEN_BIT), text that already is 7bit data in the
    sense of RFC 2045 section 2.7 (ASCII, no NUL, no line over MAX_LINE) goes as it is; anything
    else is quoted-printable, as every part of older versions is, so those rebuild unchanged."""
    normalized = text.replace("\r\n", "\n").replace("\r", "\n") if "\r" in text else text
    if seven_bit and normalized.isascii() and "\x00" not in normalized and (
            len(normalized) <= MAX_LINE or max(map(len, normalized.split("\n"))) <= MAX_LINE):
        return "7bit", normalized.replace("\n", "\r\n").encode("ascii")
    encoded = binascii.b2a_qp(normalized.encode("utf-8"), istext=True, header=False)
    # b2a_qp keeps bare LF; the wire format wants CRLF, and a leading dot is escaped by smtplib.
    return "quoted-printable", encoded.replace(b"\n", b"\r\n")


def freeze(mailing: Any, *, link_ids: dict[str, int], base_url: str, bounce_domain: str,
           email_type_name: str = "", transactional: bool = False,
           variants: list[tuple[int, str, str]] | None = None) -> dict[str, Any]:
    """The content of a MailingVersion: everything needed to build any recipient's message.

    `variants` (id, subject, from-name) are an A/B test's: a recipient whose merge data names
    one (`variant`) gets its subject and from-name. `transactional`: the email type is marked
    transactional, so its messages carry no List-Unsubscribe header (see MessageBuilder.build)."""
    check_template(mailing.subject, "Subject")
    for _, variant_subject, _ in variants or []:
        check_template(variant_subject, "Variant subject")
    check_template(mailing.html_body, "HTML body")
    check_template(mailing.text_body, "Text body")
    html = rewrite_links(mailing.html_body, link_ids, base_url) if mailing.html_body else ""
    if html:
        html = add_open_pixel(html, base_url)
    return {
        "subject": mailing.subject,
        "html": html,
        "text": mailing.text_body,
        "from": _format_address(mailing.from_name, mailing.from_address),
        "reply_to": mailing.reply_to,
        "base_url": base_url,
        "bounce_domain": bounce_domain,
        "boundary": f"=_sb_{secrets.token_hex(12)}",
        "body_encoding": SEVEN_BIT,
        "domain": mailing.from_address.rpartition("@")[2] or "sendboard.local",
        "mailing_id": mailing.id,
        "email_type": email_type_name,
        **({"transactional": True} if transactional else {}),
        **({"variants": {str(vid): {"subject": subject,
                                    "from": _format_address(name, mailing.from_address)}
                         for vid, subject, name in variants}} if variants else {}),
    }


@dataclass(frozen=True)
class Built:
    envelope_from: str
    data: bytes


class MessageBuilder:
    """Builds recipients' messages for one frozen version; reuse it for a whole batch.

    With a `signer` (a DKIM key of the From domain), every message's final bytes are signed.
    """

    def __init__(self, content: dict[str, Any],
                 signer: Callable[[bytes, datetime], bytes] | None = None) -> None:
        self.content = content
        self.signer = signer
        try:
            self.subject_t = _TEXT_ENV.from_string(content["subject"])
            self.html_t = _HTML_ENV.from_string(content["html"]) if content["html"] else None
            self.text_t = _TEXT_ENV.from_string(content["text"]) if content["text"] else None
            self.variants = {key: (_TEXT_ENV.from_string(v["subject"]), str(v["from"]))
                             for key, v in (content.get("variants") or {}).items()}
        except TemplateSyntaxError as exc:
            raise TemplateProblem(f"line {exc.lineno}: {exc.message}") from exc
        base = content["base_url"]
        self.unsubscribe_url = f"{base}/u/{TOKEN_SLOT}"
        self.preferences_url = f"{base}/u/{TOKEN_SLOT}/preferences"
        self.boundary = content["boundary"]
        head: list[str] = []  # after From, which an A/B variant may change
        if content.get("reply_to"):
            head.append(f"Reply-To: {_format_address('', content['reply_to'])}")
        head.append("MIME-Version: 1.0")
        self.fixed_head = "\r\n".join(head)
        b = self.boundary
        self.seven_bit = content.get("body_encoding") == SEVEN_BIT
        # A part's opening lines, for either transfer encoding (_body chooses per message).
        self.text_open = {cte: (
            f"--{b}\r\nContent-Type: text/plain; charset=\"utf-8\"\r\n"
            f"Content-Transfer-Encoding: {cte}\r\n\r\n"
        ).encode() for cte in ("7bit", "quoted-printable")}
        self.html_open = {cte: (
            f"\r\n--{b}\r\nContent-Type: text/html; charset=\"utf-8\"\r\n"
            f"Content-Transfer-Encoding: {cte}\r\n\r\n"
        ).encode() for cte in ("7bit", "quoted-printable")}
        self.close = f"\r\n--{b}--\r\n".encode()

    def context(self, merge: dict[str, Any]) -> dict[str, Any]:
        ctx = dict(merge.get("fields") or {})
        # A transactional send's own variables, frozen with its one message, over the fields.
        ctx.update(self.content.get("data") or {})
        ctx.update(
            name=merge.get("name", ""),
            email=merge.get("email", ""),
            fields=merge.get("fields") or {},
        )
        ctx[UNSUBSCRIBE_VAR] = self.unsubscribe_url
        ctx[PREFERENCES_VAR] = self.preferences_url
        return ctx

    def list_unsubscribe(self, unsubscribe: str, envelope_from: str) -> str:
        """The List-Unsubscribe headers (RFC 2369) with one-click (RFC 8058) of bulk mail.

        Empty for an email type marked transactional: a receipt or a password reset is not a
        list, and a mail client's one-click "unsubscribe" would mark the contact do not email
        for everything. Its body may still link to the unsubscribe page."""
        if self.content.get("transactional"):
            return ""
        return (f"List-Unsubscribe: <{unsubscribe}>, <mailto:{envelope_from}?subject=unsubscribe>"
                "\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n")

    def build(self, *, merge: dict[str, Any], address: str, token: str, message_id: str,
              sent_at: datetime) -> Built:
        """The exact bytes for one recipient; raises TemplateProblem if rendering fails."""
        ctx = self.context(merge)
        subject_t, sender = self.subject_t, self.content["from"]
        if self.variants and merge.get("variant") is not None:
            subject_t, sender = self.variants.get(str(merge["variant"]), (subject_t, sender))
        try:
            subject = subject_t.render(ctx).replace(TOKEN_SLOT, token)
            html = self.html_t.render(ctx).replace(TOKEN_SLOT, token) if self.html_t else ""
            text = self.text_t.render(ctx).replace(TOKEN_SLOT, token) if self.text_t else ""
        except Exception as exc:  # a template is user code: whatever it raises is its problem
            raise TemplateProblem(f"render failed: {exc}") from exc
        base = self.content["base_url"]
        unsubscribe = f"{base}/u/{token}"
        envelope_from = f"bounce+{token}@{self.content['bounce_domain']}"
        rid = f'{{"sb_rid": {json.dumps(token)}}}'  # what json.dumps gives for the dict
        headers = (
            f"From: {sender}\r\n{self.fixed_head}\r\n"
            f"To: {_format_address(merge.get('name', ''), address)}\r\n"
            f"Subject: {_encode_header(subject)}\r\n"
            f"Date: {_date_header(sent_at)}\r\n"
            f"Message-ID: <{message_id}>\r\n"
            f"{self.list_unsubscribe(unsubscribe, envelope_from)}"
            f"X-Sendboard-Rid: {token}\r\n"
            f"X-SMTPAPI: {{\"unique_args\": {rid}}}\r\n"
            f"X-Mailgun-Variables: {rid}\r\n"
            f"X-PM-Metadata-sb_rid: {token}\r\n"
            f"X-Mailin-custom: {token}\r\n"
        )
        if html and text:
            text_cte, text_bytes = _body(text, self.seven_bit)
            html_cte, html_bytes = _body(html, self.seven_bit)
            body = (
                f"Content-Type: multipart/alternative; boundary=\"{self.boundary}\"\r\n\r\n"
            ).encode() + (self.text_open[text_cte] + text_bytes + self.html_open[html_cte]
                          + html_bytes + self.close)
        else:
            kind = "html" if html else "plain"
            cte, part = _body(html or text, self.seven_bit)
            body = (
                f"Content-Type: text/{kind}; charset=\"utf-8\"\r\n"
                f"Content-Transfer-Encoding: {cte}\r\n\r\n"
            ).encode() + part
        try:
            head = headers.encode("ascii")
        except UnicodeEncodeError as exc:
            raise TemplateProblem(f"a header cannot be written as 7-bit text: {exc}") from exc
        data = head + body
        if self.signer is not None:
            data = self._sign(data, sent_at)
        return Built(envelope_from, data)

    def _sign(self, data: bytes, sent_at: datetime) -> bytes:
        from app.services.dkim import SigningError

        assert self.signer is not None
        try:
            return self.signer(data, sent_at)
        except SigningError as exc:
            raise TemplateProblem(str(exc)) from exc


@lru_cache(maxsize=32)
def _builder_cache(version_id: int, content_json: str) -> MessageBuilder:
    return MessageBuilder(json.loads(content_json))


def builder_for(version_id: int, content: dict[str, Any]) -> MessageBuilder:
    """The builder of a frozen version, signing with the From domain's DKIM key if it has one.

    The compiled templates are cached per version (a worker process sends many batches of one);
    the key is looked up on each call, so once per batch: a key added or deleted in Settings
    applies from the next batch, and no message costs a query. Raises TemplateProblem when the
    stored key cannot be used.
    """
    from app.services.dkim import SigningError, signer_for

    builder = _builder_cache(version_id, json.dumps(content, sort_keys=True))
    try:
        signer = signer_for(str(content.get("domain") or ""))
    except SigningError as exc:
        raise TemplateProblem(str(exc)) from exc
    if signer is None:
        return builder
    signed = copy.copy(builder)  # shares the compiled templates, not the signer
    signed.signer = signer
    return signed


class _RandomBytes:
    """Bytes from the operating system's random source, fetched a few kilobytes at a time
    instead of by one system call per message; a forked child starts with a fresh supply."""

    SUPPLY = 4096

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._supply = b""
        self._at = 0
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self._lock = threading.Lock()
        self._supply, self._at = b"", 0

    def take(self, n: int) -> bytes:
        with self._lock:
            if self._at + n > len(self._supply):
                self._supply, self._at = os.urandom(max(self.SUPPLY, n)), 0
            self._at += n
            return self._supply[self._at - n:self._at]


_random = _RandomBytes()


def new_message_id(recipient_id: int, domain: str) -> str:
    """A globally unique Message-ID (without angle brackets) that names the recipient row."""
    return f"r{recipient_id}.{_random.take(6).hex()}@{domain}"


def merge_data(contact_name: str, address: str, fields: dict[str, Any] | None,
               variant: int | None = None) -> dict[str, Any]:
    """The variables one recipient is rendered with, stored so the message can be rebuilt;
    `variant` is the recipient's A/B variant, whose subject and from-name it gets."""
    merge: dict[str, Any] = {"name": contact_name or "", "email": address, "fields": fields or {}}
    if variant is not None:
        merge["variant"] = variant
    return merge


def preview(mailing: Any, merge: dict[str, Any], base_url: str) -> dict[str, str]:
    """Subject, HTML and text for one contact, as the editor's preview shows them."""
    for source, what in ((mailing.subject, "Subject"), (mailing.html_body, "HTML body"),
                         (mailing.text_body, "Text body")):
        check_template(source, what)
    builder = MessageBuilder({
        "subject": mailing.subject, "html": mailing.html_body, "text": mailing.text_body,
        "from": mailing.from_address, "reply_to": "", "base_url": base_url,
        "bounce_domain": "preview", "boundary": "preview", "domain": "preview",
    })
    ctx = builder.context(merge)
    try:
        return {
            "subject": builder.subject_t.render(ctx),
            "html": builder.html_t.render(ctx) if builder.html_t else "",
            "text": builder.text_t.render(ctx) if builder.text_t else "",
        }
    except Exception as exc:  # a template is user code: whatever it raises is its problem
        raise TemplateProblem(f"render failed: {exc}") from exc
