local V = ...
-- tars: TARS (TUP) tag-length-value fields, as TarsGo's tars/protocol/codec reads them. The
-- readers of runtime/fieldtypes/tars.py in Lua 5.2, value for value and error for error:
--   int(tag)     an integer field (int1/int2/int4/int8, or ZERO)
--   string(tag)  a string field (string1: u8 length, string4: u32 length), UTF-8
--   bytes(tag)   a vector<byte> field: a simple list of int1, or a plain list of int1 elements
--   map(tag)     a map<string, string> field (keys tag 0, values tag 1)
--   any(tag)     any field, kept as its bytes (head included)
--   rest         the fields after the last one a layout names, of any tags, as their bytes
--
-- A field starts with a head: (tag << 4) | type, or 0xF0 | type and then a tag byte for tags of
-- 15 and more. A tagged reader skips the fields with lower tags before its own, and finds its
-- field absent (null, nothing consumed) when the next field has a higher tag, a struct ends,
-- or the bytes end. After its field it also takes the fields no later reader would see (lower
-- or equal tags, as TarsGo skips them), as Python keeps them with the value.
--
-- read returns value, position after, and a third value, true when the bytes ending at
-- ``stop`` decided the result: the field was not found before ``stop``, or the fields a value
-- takes after it ran to ``stop`` (or rest's, which always do). Were ``stop`` only where the
-- bytes received so far end, more bytes could make it another value.
--
-- Python's values remember the bytes they came as (tars.Wire) so that the proxy writes an
-- unchanged field back verbatim; here a value is the plain value. The context keeps what rest
-- needs of that: whether the last value read took other fields' bytes with it.
--
-- Errors: V.short where a value runs past ``stop`` (a head, length or count that the bytes
-- before ``stop`` cannot hold), V.fail where the bytes cannot be the field, both at the offset
-- the Python reader reports.

local byte, sub, format, floor = string.byte, string.sub, string.format, math.floor

local M = { TYPES = {}, FUNCTIONS = {} }

local MAX_DEPTH = 64

-- head types (TarsGo codec constants)
local INT1, INT2, INT4, INT8, STRING1, STRING4 = 0, 1, 2, 3, 6, 7
local MAP, LIST, STRUCT_BEGIN, STRUCT_END, ZERO, SIMPLE_LIST = 8, 9, 10, 11, 12, 13

local TYPE_NAMES = { [0] = "int1", "int2", "int4", "int8", "float", "double", "string1",
    "string4", "map", "list", "struct", "struct end", "zero", "simple list", "type 14", "type 15" }

-- fixed value sizes by type; -1: variable or invalid
local SIZE = { [0] = 1, 2, 4, 8, 4, 8, -1, -1, -1, -1, -1, 0, 0, -1, -1, -1 }
local INT_SIZE = { [INT1] = 1, [INT2] = 2, [INT4] = 4, [INT8] = 8 }

-- The per-message context: ``foreign``, whether the last value read took other fields' bytes
-- with it (fields skipped before it, or lower tags after it).
function M.new_context()
    return { foreign = false }
end

-- The field head at ``pos`` (``pos`` < ``stop``): type, tag, value position.
local function read_head(buf, pos, stop)
    local b = byte(buf, pos + 1)
    local ty, tag, p = b % 16, floor(b / 16), pos + 1
    if tag == 15 then
        if p >= stop then V.short(pos, "head") end
        tag = byte(buf, p + 1)
        p = p + 1
    end
    return ty, tag, p
end

-- The integer of type ``ty`` whose value starts at ``pos`` (its head was at ``head``).
local function int_value(buf, pos, stop, ty, head)
    if ty == ZERO then return 0, pos end
    local size = INT_SIZE[ty]
    if size == nil then V.fail(head, "expected an integer, found " .. TYPE_NAMES[ty]) end
    if pos + size > stop then V.short(pos, TYPE_NAMES[ty]) end
    return V.int_at(buf, pos, size, "big", true, stop), pos + size
end

-- A container length: an int32-compatible integer with tag 0, never negative.
local function length_at(buf, pos, stop)
    if pos >= stop then V.short(pos, "a length") end
    local ty, tag, p = read_head(buf, pos, stop)
    if tag ~= 0 or ty == INT8 then
        V.fail(pos, format("expected a length (int, tag 0), found %s tag %d", TYPE_NAMES[ty], tag))
    end
    local n
    n, p = int_value(buf, p, stop, ty, pos)
    if n < 0 then V.fail(pos, format("negative length %d", n)) end
    return n, p
end

-- The position after the value of type ``ty`` starting at ``pos`` (after its head).
local function skip(buf, pos, stop, ty, depth)
    local size = SIZE[ty]
    if size >= 0 then
        if pos + size > stop then V.short(pos, TYPE_NAMES[ty]) end
        return pos + size
    end
    if ty == STRING1 then
        if pos >= stop then V.short(pos, "string length") end
        local after = pos + 1 + byte(buf, pos + 1)
        if after > stop then V.short(pos, "string") end
        return after
    end
    if ty == STRING4 then
        if pos + 4 > stop then V.short(pos, "string length") end
        local after = pos + 4 + V.int_at(buf, pos, 4, "big", false, stop)
        if after > stop then V.short(pos, "string") end
        return after
    end
    if ty == SIMPLE_LIST then
        if pos >= stop then V.short(pos, "simple list") end
        local b = byte(buf, pos + 1)
        -- TarsGo checks the element head's type only; Java the same
        if b % 16 ~= INT1 then
            V.fail(pos, format("simple list of %s, expected int1", TYPE_NAMES[b % 16]))
        end
        local p = pos + (b >= 0xF0 and 2 or 1)
        if p > stop then V.short(pos, "head") end -- the element head's tag byte is past the end
        local n
        n, p = length_at(buf, p, stop)
        if p + n > stop then V.short(p, format("simple list of %d bytes", n)) end
        return p + n
    end
    if ty > SIMPLE_LIST then V.fail(pos, format("value of unknown type %d", ty)) end
    if depth > MAX_DEPTH then
        V.fail(pos, format("values nested deeper than %d levels", MAX_DEPTH))
    end
    depth = depth + 1
    if ty == STRUCT_BEGIN then
        while true do
            if pos >= stop then V.short(pos, "a struct without its end") end
            local b = byte(buf, pos + 1)
            pos = pos + (b >= 0xF0 and 2 or 1)
            if pos > stop then V.short(pos - 2, "head") end
            if b % 16 == STRUCT_END then return pos end
            pos = skip(buf, pos, stop, b % 16, depth)
        end
    end
    -- MAP and LIST: a length then that many (MAP: twice as many) whole fields
    local n
    n, pos = length_at(buf, pos, stop)
    if ty == MAP then n = 2 * n end
    if n > stop - pos then -- every field takes a byte at least
        V.short(pos, format("%s of %d fields", TYPE_NAMES[ty], n))
    end
    for _ = 1, n do
        if pos >= stop then V.short(pos, TYPE_NAMES[ty]) end
        local b = byte(buf, pos + 1)
        pos = pos + (b >= 0xF0 and 2 or 1)
        if pos > stop then V.short(pos - 2, "head") end
        pos = skip(buf, pos, stop, b % 16, depth)
    end
    return pos
end

-- Skip the fields with lower tags than ``tag``: the type, value position and head position of
-- the field with ``tag``; or -1 and the position where it was found absent, and whether that
-- is ``stop``.
local function seek(buf, pos, stop, tag)
    while pos < stop do
        local ty, cur, p = read_head(buf, pos, stop)
        if ty == STRUCT_END or cur > tag then return -1, pos, false end
        if cur == tag then return ty, p, pos end
        pos = skip(buf, p, stop, ty, 1)
    end
    return -1, pos, true
end

-- The position after the fields at ``pos`` whose tags are at most ``tag``: fields no reader of
-- a higher tag would see (TarsGo skips them), kept with the field before them.
local function lower_after(buf, pos, stop, tag)
    while pos < stop do
        local ty, cur, p = read_head(buf, pos, stop)
        if ty == STRUCT_END or cur > tag then return pos end
        pos = skip(buf, p, stop, ty, 1)
    end
    return pos
end

local function string_value(buf, pos, stop, ty, head)
    local start, after
    if ty == STRING1 then
        if pos >= stop then V.short(pos, "string length") end
        start = pos + 1
        after = start + byte(buf, pos + 1)
    elseif ty == STRING4 then
        if pos + 4 > stop then V.short(pos, "string length") end
        start = pos + 4
        after = start + V.int_at(buf, pos, 4, "big", false, stop)
    else
        V.fail(head, "expected a string, found " .. TYPE_NAMES[ty])
    end
    if after > stop then V.short(pos, "string") end
    return V.utf8(buf, start, after, "a string"), after
end

-- ---- the tagged readers -------------------------------------------------------------------

-- What every tagged reader does around its own value (class:value, the value at ``p`` of a
-- field of type ``ty`` whose head is at ``head``).
local function tagged_read(self, buf, pos, stop, ctx)
    local tag = self.tag
    local ty, p, head = seek(buf, pos, stop, tag)
    if ty < 0 then
        return V.NULL, pos, head -- (what was skipped belongs to the next field read)
    end
    local value, after = self:value(buf, p, stop, ty, head)
    local last = after
    if after < stop then
        local t = floor(byte(buf, after + 1) / 16)
        if t <= tag or t == 15 then -- fields after it that no later reader sees: keep them
            last = lower_after(buf, after, stop, tag)
        end
    end
    if ctx ~= nil then ctx.foreign = pos < head or after < last end
    return value, last, last == stop
end

local function tagged(name, class)
    class.__index = class
    class.read = tagged_read
    M.TYPES[name] = function(tag)
        if type(tag) ~= "number" or tag ~= floor(tag) or tag < 0 or tag > 255 then
            error(format("tars tag %s is not in 0..255", tostring(tag)), 0)
        end
        return setmetatable({ tag = tag }, class)
    end
end

-- An integer field: int1/int2/int4/int8 or ZERO on the wire.
local Int = {}
function Int:value(buf, p, stop, ty, head)
    return int_value(buf, p, stop, ty, head)
end
tagged("int", Int)

-- A string field.
local String = {}
function String:value(buf, p, stop, ty, head)
    return string_value(buf, p, stop, ty, head)
end
tagged("string", String)

-- A vector<byte> field: a simple list (as TarsGo and Java write it), or a plain list of int1
-- elements (as some older writers do).
local Bytes = {}
function Bytes:value(buf, p, stop, ty, head)
    local start = p
    if ty == SIMPLE_LIST then
        if p >= stop then V.short(p, "simple list") end
        local b = byte(buf, p + 1)
        if b % 16 ~= INT1 then
            V.fail(p, format("simple list of %s, expected int1", TYPE_NAMES[b % 16]))
        end
        p = p + (b >= 0xF0 and 2 or 1)
        if p > stop then V.short(start, "head") end -- the element head's tag byte is past the end
        local n
        n, p = length_at(buf, p, stop)
        if p + n > stop then V.short(p, format("simple list of %d bytes", n)) end
        return V.bytes(sub(buf, p + 1, p + n)), p + n
    end
    if ty == LIST then
        local n
        n, p = length_at(buf, p, stop)
        if n > stop - p then V.short(p, format("list of %d elements", n)) end
        local out = {}
        for i = 1, n do
            if p >= stop then V.short(p, "list") end
            local b = byte(buf, p + 1)
            if b == 0x0C then -- ZERO, tag 0
                out[i] = "\0"
                p = p + 1
            elseif b == 0x00 then -- int1, tag 0
                if p + 2 > stop then V.short(p, "list element") end
                out[i] = sub(buf, p + 2, p + 2)
                p = p + 2
            else
                V.fail(p, "a byte list element must be an int1 with tag 0")
            end
        end
        return V.bytes(table.concat(out)), p
    end
    V.fail(head, "expected bytes (simple list), found " .. TYPE_NAMES[ty])
end
tagged("bytes", Bytes)

-- A map<string, string> field (keys tag 0, values tag 1). A key that comes again replaces
-- the value of the first.
local Map = {}
function Map:value(buf, p, stop, ty, head)
    if ty ~= MAP then V.fail(head, "expected a map, found " .. TYPE_NAMES[ty]) end
    local n
    n, p = length_at(buf, p, stop)
    if 4 * n > stop - p then -- an entry is two heads and two lengths at least
        V.short(p, format("map of %d entries", n))
    end
    local out = V.map()
    for _ = 1, n do
        local pair = {}
        for want = 0, 1 do
            if p >= stop then V.short(p, "map") end
            local b = byte(buf, p + 1)
            local t, tag, h = b % 16, floor(b / 16), p
            p = p + 1
            if tag == 15 then
                if p >= stop then V.short(h, "head") end
                tag = byte(buf, p + 1)
                p = p + 1
            end
            if tag ~= want then
                V.fail(h, format("map entry has tag %d, expected %d", tag, want))
            end
            pair[want + 1], p = string_value(buf, p, stop, t, h)
        end
        out:put(pair[1], pair[2])
    end
    return out, p
end
tagged("map", Map)

-- Any field: the bytes of the whole field, head included.
local Any = {}
function Any:value(buf, p, stop, ty, head)
    local after = skip(buf, p, stop, ty, 1)
    return V.bytes(sub(buf, head + 1, after)), after
end
tagged("any", Any)

-- The fields after the last one a layout names, of any tags: their bytes; null when there are
-- none, unless the value before took other fields' bytes (then the empty bytes: what Python's
-- proxy writes there depends on it).
local Rest = {}
Rest.__index = Rest

function Rest:read(buf, pos, stop, ctx)
    local before = ctx ~= nil and ctx.foreign
    if pos >= stop and not before then return V.NULL, pos, true end
    local p = pos
    while p < stop do
        local b = byte(buf, p + 1)
        local h = p
        p = p + (b >= 0xF0 and 2 or 1)
        if p > stop then V.short(h, "head") end
        p = skip(buf, p, stop, b % 16, 1)
    end
    if before then ctx.foreign = false end
    return V.bytes(sub(buf, pos + 1, stop)), stop, true
end

M.TYPES.rest = function(...)
    if select("#", ...) > 0 then error("tars.rest takes no arguments", 0) end
    return setmetatable({}, Rest)
end

return M
