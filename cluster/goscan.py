"""Go's texts, for errors that must read as Go's: strconv.Quote (`go_quote`) and a port of
encoding/json's syntax scanner (scanner.go), run over input Python's json module refused to
find Go's exact message (`check_valid` for json.Unmarshal, `read_value` for json.Decoder).
cluster/gojson.py is the decoder that uses them."""

from __future__ import annotations

from collections.abc import Callable

# ---- Go's quoting of runes and strings (strconv.Quote) ----

_GO_SHORT = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t",
             "\v": "\\v", '"': '\\"', "\\": "\\\\"}


def go_quote(text: str) -> str:
    """Go's %q / strconv.Quote: what Consul puts in messages like `Peering not found for "x"`."""
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch in _GO_SHORT:
            out.append(_GO_SHORT[ch])
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif 0xDC80 <= code <= 0xDCFF:  # an undecodable byte kept by surrogateescape
            out.append(f"\\x{code - 0xDC00:02x}")
        elif 0xD800 <= code <= 0xDFFF:  # a lone surrogate: not a valid rune
            out.append("\\ufffd")
        elif ch.isprintable():
            out.append(ch)
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


def quote_char(c: int) -> str:
    """Go's quoteChar: one input byte, shown as the rune of that value."""
    if c == 0x27:
        return "'\\''"
    if c == 0x22:
        return "'\"'"
    return "'" + go_quote(chr(c))[1:-1] + "'"


# ---- Go's scanner, for the error texts ----

_CONT, _CLOSE, _END, _ERROR = range(4)
_OBJ_KEY, _OBJ_VALUE, _ARR_VALUE = range(3)
_MAX_DEPTH = 10000  # encoding/json maxNestingDepth
_SPACE = frozenset(b" \t\n\r")
_DIGIT = frozenset(b"0123456789")
_HEX = frozenset(b"0123456789abcdefABCDEF")


class _Scanner:
    """encoding/json's scanner state machine, one byte at a time (states named as in Go)."""

    def __init__(self) -> None:
        self.step: Callable[[int], int] = self.begin_value
        self.stack: list[int] = []
        self.end_top = False
        self.err: str | None = None

    def error(self, c: int, context: str) -> int:
        self.step = lambda c: _ERROR
        self.err = f"invalid character {quote_char(c)} {context}"
        return _ERROR

    def eof(self) -> str | None:
        if self.err is not None:
            return self.err
        if self.end_top:
            return None
        self.step(0x20)
        if self.end_top:
            return None
        if self.err is None:
            self.err = "unexpected end of JSON input"
        return self.err

    def push(self, c: int, state: int) -> int:
        self.stack.append(state)
        if len(self.stack) <= _MAX_DEPTH:
            return _CONT
        return self.error(c, "exceeded max depth")

    def pop(self) -> None:
        self.stack.pop()
        if not self.stack:
            self.step = self.end_top_state
            self.end_top = True
        else:
            self.step = self.end_value

    def begin_value_or_empty(self, c: int) -> int:
        if c in _SPACE:
            return _CONT
        if c == 0x5D:  # ]
            return self.end_value(c)
        return self.begin_value(c)

    def begin_value(self, c: int) -> int:
        if c in _SPACE:
            return _CONT
        if c == 0x7B:  # {
            self.step = self.begin_string_or_empty
            return self.push(c, _OBJ_KEY)
        if c == 0x5B:  # [
            self.step = self.begin_value_or_empty
            return self.push(c, _ARR_VALUE)
        if c == 0x22:  # "
            self.step = self.in_string
        elif c == 0x2D:  # -
            self.step = self.neg
        elif c == 0x30:  # 0
            self.step = self.zero
        elif c in b"tfn":
            word = {0x74: b"true", 0x66: b"false", 0x6E: b"null"}[c]
            self.step = self.literal(word, 1)
        elif c in _DIGIT:
            self.step = self.digits
        else:
            return self.error(c, "looking for beginning of value")
        return _CONT

    def begin_string_or_empty(self, c: int) -> int:
        if c in _SPACE:
            return _CONT
        if c == 0x7D:  # }
            self.stack[-1] = _OBJ_VALUE
            return self.end_value(c)
        return self.begin_string(c)

    def begin_string(self, c: int) -> int:
        if c in _SPACE:
            return _CONT
        if c == 0x22:
            self.step = self.in_string
            return _CONT
        return self.error(c, "looking for beginning of object key string")

    def end_value(self, c: int) -> int:
        if not self.stack:
            self.step = self.end_top_state
            self.end_top = True
            return self.end_top_state(c)
        if c in _SPACE:
            self.step = self.end_value
            return _CONT
        state = self.stack[-1]
        if state == _OBJ_KEY:
            if c == 0x3A:  # :
                self.stack[-1] = _OBJ_VALUE
                self.step = self.begin_value
                return _CONT
            return self.error(c, "after object key")
        if state == _OBJ_VALUE:
            if c == 0x2C:  # ,
                self.stack[-1] = _OBJ_KEY
                self.step = self.begin_string
                return _CONT
            if c == 0x7D:
                self.pop()
                return _CLOSE
            return self.error(c, "after object key:value pair")
        if c == 0x2C:
            self.step = self.begin_value
            return _CONT
        if c == 0x5D:
            self.pop()
            return _CLOSE
        return self.error(c, "after array element")

    def end_top_state(self, c: int) -> int:
        if c not in _SPACE:
            self.error(c, "after top-level value")  # reported on the next byte or at EOF
        return _END

    def in_string(self, c: int) -> int:
        if c == 0x22:
            self.step = self.end_value
        elif c == 0x5C:  # backslash
            self.step = self.in_string_esc
        elif c < 0x20:
            return self.error(c, "in string literal")
        return _CONT

    def in_string_esc(self, c: int) -> int:
        if c in b'bfnrt\\/"':
            self.step = self.in_string
            return _CONT
        if c == 0x75:  # u
            self.step = self.esc_u(0)
            return _CONT
        return self.error(c, "in string escape code")

    def esc_u(self, seen: int) -> Callable[[int], int]:
        def step(c: int) -> int:
            if c not in _HEX:
                return self.error(c, "in \\u hexadecimal character escape")
            self.step = self.in_string if seen == 3 else self.esc_u(seen + 1)
            return _CONT

        return step

    def literal(self, word: bytes, pos: int) -> Callable[[int], int]:
        def step(c: int) -> int:
            if c != word[pos]:
                name = word.decode()
                return self.error(c, f"in literal {name} (expecting {quote_char(word[pos])})")
            self.step = self.end_value if pos == len(word) - 1 else self.literal(word, pos + 1)
            return _CONT

        return step

    def neg(self, c: int) -> int:
        if c == 0x30:
            self.step = self.zero
            return _CONT
        if c in _DIGIT:
            self.step = self.digits
            return _CONT
        return self.error(c, "in numeric literal")

    def digits(self, c: int) -> int:
        if c in _DIGIT:
            return _CONT
        return self.zero(c)

    def zero(self, c: int) -> int:
        if c == 0x2E:  # .
            self.step = self.dot
            return _CONT
        if c in b"eE":
            self.step = self.exp
            return _CONT
        return self.end_value(c)

    def dot(self, c: int) -> int:
        if c in _DIGIT:
            self.step = self.dot_digits
            return _CONT
        return self.error(c, "after decimal point in numeric literal")

    def dot_digits(self, c: int) -> int:
        if c in _DIGIT:
            return _CONT
        if c in b"eE":
            self.step = self.exp
            return _CONT
        return self.end_value(c)

    def exp(self, c: int) -> int:
        if c in b"+-":
            self.step = self.exp_sign
            return _CONT
        return self.exp_sign(c)

    def exp_sign(self, c: int) -> int:
        if c in _DIGIT:
            self.step = self.exp_digits
            return _CONT
        return self.error(c, "in exponent of numeric literal")

    def exp_digits(self, c: int) -> int:
        if c in _DIGIT:
            return _CONT
        return self.end_value(c)


def check_valid(data: bytes, limit: int) -> str | None:
    """json.Unmarshal's checkValid: the error text for the whole input, or None. Only the
    first `limit` bytes are scanned; None for a longer input means "no error in them"."""
    scan = _Scanner()
    for c in data[:limit]:
        if scan.step(c) == _ERROR:
            return scan.err
    return scan.eof() if len(data) <= limit else scan.err


def read_value(data: bytes, limit: int) -> str | None:
    """json.Decoder.readValue: the error text for the first value of a stream, or None
    (also when the first `limit` bytes hold neither the value's end nor an error)."""
    scan = _Scanner()
    for c in data[:limit]:
        code = scan.step(c)
        if code == _END:
            return None
        if code == _CLOSE and scan.end_value(0x20) == _END:
            return None
        if code == _ERROR:
            return scan.err
    if len(data) > limit or scan.step(0x20) == _END:
        return None
    return "unexpected EOF" if data.strip(b" \t\n\r") else "EOF"
