-- protoc-x dissector core: reads one frame as SPEC describes it, with the values and the
-- positions of its fields, then its routing view (request id, stream type, status, service,
-- method, headers) as the generated Python codec computes it. Plain Lua 5.2, no Wireshark API.
--
-- C.parse(buf, start, avail, direction, first) reads the frame at ``buf[start:]`` (0-based),
-- of which the bytes before ``avail`` have arrived. It returns the frame, or raises:
--   {need = true, more = n}   the frame goes on past ``avail``: n more bytes (nil: unknown)
--   {fail = true, offset = pos, reason = "..."}
-- A frame is {length, values (a V.record of its fields), nodes (what the tree shows, in
-- wire order: {name, pos, len, value, field, children}), view (the routing view), errors
-- (an inside layout that could not be read: the frame itself is whole)}.

local V, FIELDTYPES, SPEC = ...
local C = {}

local NULL = V.NULL

-- ---- helpers -----------------------------------------------------------------------------

local function null(v)
    return v == nil or v == NULL
end

-- pcall that keeps the traceback of an error that is no reader's or evaluator's (a bug).
local function protect(f, ...)
    return xpcall(f, function(e)
        if type(e) == "table" then return e end
        return debug.traceback(tostring(e), 2)
    end, ...)
end

local function eval_error(reason)
    error({ eval = true, reason = reason }, 0)
end

-- Python's truth of a value.
local function truthy(v)
    if null(v) or v == false then return false end
    if type(v) == "number" then return v ~= 0 end
    if type(v) == "string" then return #v > 0 end
    if V.is_bytes(v) then return #v.s > 0 end
    if V.is_list(v) then return v.n > 0 end
    if V.is_map(v) then return v.n > 0 end
    if V.is_float(v) then return v.x ~= 0 end
    return true
end

local function is_int(v)
    return type(v) == "number" or V.is_big(v)
end

-- Python's == of two values (an integer and a float compare by value; True == 1).
local function eq(a, b)
    if null(a) or null(b) then return null(a) and null(b) end
    if type(a) == "boolean" then a = a and 1 or 0 end
    if type(b) == "boolean" then b = b and 1 or 0 end
    if V.is_float(a) then a = a.x end
    if V.is_float(b) then b = b.x end
    if type(a) == "number" and type(b) == "number" then return a == b end
    if V.is_big(a) or V.is_big(b) then
        return V.is_big(a) and V.is_big(b) and a.neg == b.neg and a.digits == b.digits
    end
    if type(a) == "string" or type(b) == "string" then return a == b end
    if V.is_bytes(a) and V.is_bytes(b) then return a.s == b.s end
    if V.is_list(a) and V.is_list(b) then
        if a.n ~= b.n then return false end
        for i = 1, a.n do
            if not eq(a.items[i], b.items[i]) then return false end
        end
        return true
    end
    if (V.is_map(a) or V.is_record(a)) and (V.is_map(b) or V.is_record(b)) then
        return V.json(a) == V.json(b)
    end
    return false
end

local function num(v, what)
    if type(v) == "boolean" then return v and 1 or 0 end
    if type(v) == "number" then return v end
    if V.is_float(v) then return v.x end
    if V.is_big(v) then eval_error("an integer beyond 2^53 in " .. what) end
    eval_error("no number for " .. what)
end

-- runtime.api's text(): a value as text (bytes as UTF-8, invalid bytes replaced).
local function utf8_replace(s)
    local out, i, n = {}, 1, #s
    while i <= n do
        local ok, text = protect(V.utf8, s, i - 1, n)
        if ok then
            out[#out + 1] = text
            break
        end
        local bad = text.offset -- the first byte that is no UTF-8: replaced, the rest goes on
        out[#out + 1] = string.sub(s, i, bad)
        out[#out + 1] = "\239\191\189" -- U+FFFD
        i = bad + 2
    end
    return table.concat(out)
end

local function text(v)
    if null(v) then return NULL end
    if type(v) == "string" then return v end
    if V.is_bytes(v) then return utf8_replace(v.s) end
    if type(v) == "boolean" then return v and "true" or "false" end
    if is_int(v) then return V.int_text(v) end
    return V.json(v)
end
C.text = text

local function to_int(v)
    if null(v) or type(v) == "boolean" then return NULL end
    if is_int(v) then return v end
    if V.is_float(v) then return NULL end
    local t = text(v)
    if t == NULL or V.is_list(v) or V.is_map(v) or V.is_record(v) then return NULL end
    t = string.match(t, "^%s*(.-)%s*$")
    local sign, digits = string.match(t, "^([-+]?)([0-9][0-9_]*)$")
    if digits == nil or string.find(digits, "__") or string.sub(digits, -1) == "_" then
        return NULL
    end
    digits = string.gsub(digits, "_", "")
    if #digits > 15 then return NULL end -- (beyond what a Lua number holds exactly)
    local n = tonumber(digits)
    return sign == "-" and -n or n
end

local function lower(v)
    if V.is_list(v) then
        local out = V.list()
        for i = 1, v.n do out:add(lower(v.items[i])) end
        return out
    end
    local t = text(v)
    if t == NULL then return NULL end
    return string.lower(t)
end

local function words(v)
    local s
    if V.is_bytes(v) then s = v.s elseif type(v) == "string" then s = v
    elseif type(v) == "number" then return V.list({ V.int_text(v) }, 1)
    else return NULL end
    local out = V.list()
    for w in string.gmatch(s, "[^ \t\n\r\f\v]+") do
        out:add(V.is_bytes(v) and V.bytes(w) or w)
    end
    return out
end

local function char(v)
    if type(v) == "number" and v >= 0 and v <= 255 and v == math.floor(v) then
        return V.bytes(string.char(v))
    end
    return V.bytes("")
end

local function as_bytes(v)
    if null(v) then return "" end
    if type(v) == "string" then return v end
    if V.is_bytes(v) then return v.s end
    eval_error("no bytes for a value")
end

local function join(a, b)
    if null(a) then a = "" end
    if null(b) then b = "" end
    if type(a) == "string" and type(b) == "string" then return a .. b end
    return V.bytes(as_bytes(a) .. as_bytes(b))
end

local function partition(v, sep)
    if type(v) ~= "string" or type(sep) ~= "string" then return nil end
    local i = string.find(v, sep, 1, true)
    if sep == "" then i = 1 end
    if i == nil then return nil end
    return string.sub(v, 1, i - 1), string.sub(v, i + #sep)
end

local function before(v, sep)
    v = text(v)
    if v == NULL then return NULL end
    local head = partition(v, sep)
    return head == nil and NULL or head
end

local function after(v, sep)
    v = text(v)
    if v == NULL then return NULL end
    local head, tail = partition(v, sep)
    return head == nil and v or tail
end

local function value_attr(v, name)
    if V.is_list(v) then
        local out = V.list()
        for i = 1, v.n do out:add(value_attr(v.items[i], name)) end
        return out
    end
    if V.is_record(v) then
        local x = v:get(name)
        return x == nil and NULL or x
    end
    return NULL
end

local function value_item(v, i)
    if not V.is_list(v) or type(i) ~= "number" then return NULL end
    if i < 0 then i = i + v.n end
    if i < 0 or i >= v.n then return NULL end
    return v.items[i + 1]
end

-- Python's list slicing: value[start:stop:step].
local function value_slice(v, start, stop, step)
    if not V.is_list(v) then return NULL end
    local n = v.n
    if null(step) then step = 1 end
    if type(step) ~= "number" or step == 0 then return NULL end
    for _, x in ipairs({ start, stop }) do
        if not null(x) and type(x) ~= "number" then return NULL end
    end
    local function clamp(x, default)
        if null(x) then return default end
        if x < 0 then
            x = x + n
            if x < 0 then x = step < 0 and -1 or 0 end
        elseif x >= n then
            x = step < 0 and n - 1 or n
        end
        return x
    end
    local a = clamp(start, step < 0 and n - 1 or 0)
    local b = clamp(stop, step < 0 and -1 or n)
    local out = V.list()
    local i = a
    while (step > 0 and i < b) or (step < 0 and i > b) do
        out:add(v.items[i + 1])
        i = i + step
    end
    return out
end

local function map_get(m, key)
    if V.is_map(m) then
        local x = m:get(key)
        return x == nil and NULL or x
    end
    return NULL
end

local function length_of(v)
    if null(v) then return 0 end
    if type(v) == "string" then return #v end
    if V.is_bytes(v) then return #v.s end
    if V.is_list(v) or V.is_map(v) then return v.n end
    eval_error("no length for a value")
end

-- ---- expressions -------------------------------------------------------------------------

local eval

local ARITH = {
    ["+"] = function(a, b) return a + b end,
    ["-"] = function(a, b) return a - b end,
    ["*"] = function(a, b) return a * b end,
    ["%"] = function(a, b)
        if b == 0 then eval_error("modulo by zero") end
        return a % b
    end,
}

local COMPARE = {
    ["<"] = function(a, b) return a < b end,
    ["<="] = function(a, b) return a <= b end,
    [">"] = function(a, b) return a > b end,
    [">="] = function(a, b) return a >= b end,
}

local EVAL = {}

function EVAL.lit(e) return V.literal(e[2]) end -- (a number, text, or an integer beyond 2^53)
function EVAL.null() return NULL end
function EVAL.bool(e) return e[2] end
function EVAL.emptymap() return V.map() end
function EVAL.field(e, scope)
    local v = scope.values:get(e[2])
    if v == nil then return NULL end
    return v
end
function EVAL.direction(e, scope) return scope.st.direction end
function EVAL.dir_is(e, scope) return scope.st.direction == e[2] end
function EVAL.first(e, scope) return scope.st.first and true or false end
function EVAL.let(e, scope)
    local frame = scope.frame
    local v = frame.lets[e[2]]
    if v == nil then
        v = eval(SPEC.lets[e[2]], frame)
        frame.lets[e[2]] = v
    end
    return v
end
function EVAL.attr(e, scope) return value_attr(eval(e[2], scope), e[3]) end
function EVAL.item(e, scope) return value_item(eval(e[2], scope), eval(e[3], scope)) end
function EVAL.get(e, scope) return map_get(eval(e[2], scope), eval(e[3], scope)) end
function EVAL.slice(e, scope)
    return value_slice(eval(e[2], scope), eval(e[3], scope), eval(e[4], scope), eval(e[5], scope))
end
EVAL["not"] = function(e, scope) return not truthy(eval(e[2], scope)) end
function EVAL.neg(e, scope) return V.check_int(-num(eval(e[2], scope), "-")) end
EVAL["=="] = function(e, scope) return eq(eval(e[2], scope), eval(e[3], scope)) end
EVAL["!="] = function(e, scope) return not eq(eval(e[2], scope), eval(e[3], scope)) end
EVAL["and"] = function(e, scope)
    local a = eval(e[2], scope)
    if not truthy(a) then return a end
    return eval(e[3], scope)
end
EVAL["or"] = function(e, scope)
    local a = eval(e[2], scope)
    if truthy(a) then return a end
    return eval(e[3], scope)
end
EVAL["??"] = function(e, scope)
    local a = eval(e[2], scope)
    if not null(a) then return a end
    return eval(e[3], scope)
end
for op, f in pairs(ARITH) do
    EVAL[op] = function(e, scope)
        local a, b = eval(e[2], scope), eval(e[3], scope)
        if op == "+" and type(a) == "string" and type(b) == "string" then return a .. b end
        return V.check_int(f(num(a, op), num(b, op)))
    end
end
for op, f in pairs(COMPARE) do
    EVAL[op] = function(e, scope)
        local a, b = eval(e[2], scope), eval(e[3], scope)
        if type(a) == "string" and type(b) == "string" then return f(a, b) end
        return f(num(a, op), num(b, op))
    end
end
EVAL["in"] = function(e, scope)
    local v = eval(e[2], scope)
    for i = 3, #e do
        if eq(v, eval(e[i], scope)) then return true end
    end
    return false
end
function EVAL.cond(e, scope)
    if truthy(eval(e[2], scope)) then return eval(e[3], scope) end
    return eval(e[4], scope)
end
function EVAL.join(e, scope) return join(eval(e[2], scope), eval(e[3], scope)) end
function EVAL.fn(e, scope)
    local f = FIELDTYPES[e[2]].FUNCTIONS[e[3]]
    local args = {}
    for i = 4, #e do args[#args + 1] = eval(e[i], scope) end
    local v = f(table.unpack(args, 1, #e - 3))
    if v == nil then return NULL end
    return v
end
function EVAL.name(e, scope)
    local v = eval(e[2], scope)
    local names = C.enum_names[e[3]]
    local name = is_int(v) and names[V.int_text(v)]
    return name or NULL
end
EVAL["int"] = function(e, scope) return to_int(eval(e[2], scope)) end
function EVAL.lower(e, scope) return lower(eval(e[2], scope)) end
function EVAL.words(e, scope) return words(eval(e[2], scope)) end
function EVAL.char(e, scope) return char(eval(e[2], scope)) end
function EVAL.len(e, scope) return length_of(eval(e[2], scope)) end
function EVAL.before(e, scope) return before(eval(e[2], scope), eval(e[3], scope)) end
function EVAL.after(e, scope) return after(eval(e[2], scope), eval(e[3], scope)) end

eval = function(e, scope)
    local v = EVAL[e[1]](e, scope)
    if v == nil then return NULL end
    return v
end
C.eval = eval

-- enum name → {value text → member name}
C.enum_names = {}
for name, enum in pairs(SPEC.enums) do
    local names = {}
    for _, m in ipairs(enum.members) do names[V.int_text(V.literal(m.value))] = m.name end
    C.enum_names[name] = names
end

-- ---- reading layouts ---------------------------------------------------------------------

local function fail(pos, reason) V.fail(pos, reason) end

-- A field type's reader, made once and kept in its SPEC type table.
local function reader(t)
    local r = t.reader
    if r == nil then
        r = FIELDTYPES[t.module].TYPES[t.name](table.unpack(t.args or {}))
        t.reader = r
    end
    return r
end

-- The per-message context of a field-type library, one per layout being read (as Python's
-- generated code makes one per frame, record and inside layout).
local function context(scope, module)
    local ctx = scope.ctx[module]
    if ctx == nil then
        ctx = FIELDTYPES[module].new_context()
        if ctx == nil then ctx = false end
        scope.ctx[module] = ctx
    end
    return ctx or nil
end

-- Run ``f`` with a bound ``stop`` that is the value's own (a size the frame gave): running
-- past it is no reason to wait for more bytes.
local function bounded(f, ...)
    local ok, a, b = protect(f, ...)
    if ok then return a, b end
    if type(a) == "table" and a.short then
        a = { fail = true, offset = a.offset, reason = a.reason }
    end
    error(a, 0)
end

local read_items

-- A size that goes past ``stop``: more bytes may come unless the frame's end is known.
local function past(st, scope, pos, name)
    if scope.hard or st.frame_end ~= nil then
        fail(pos, name .. " overruns the frame")
    end
    V.short(pos, name)
end

local function read_record(name, buf, pos, stop, parent, depth)
    local rec = SPEC.records[name]
    if rec.depth ~= nil and depth >= rec.depth then
        fail(pos, name .. " nested deeper than " .. rec.depth)
    end
    local scope = { values = V.record(name), nodes = {}, ctx = {}, st = parent.st,
        frame = parent.frame, record = name, hard = parent.hard }
    pos = read_items(rec.items, scope, buf, pos, stop, depth + 1)
    return scope.values, pos, scope.nodes
end

-- One value of an ext or record type at ``pos``: value, position after it, and child nodes.
local function read_one(t, scope, buf, pos, stop, depth)
    if t.kind == "record" then
        return read_record(t.record, buf, pos, stop, scope, depth)
    end
    local v, after = reader(t):read(buf, pos, stop, context(scope, t.module))
    return v, after, nil
end

-- A map of length-prefixed keys and values (runtime.api read_kvmap).
local function read_pairs(t, scope, buf, pos, stop, count)
    local out = V.map()
    local len = t.length
    local n = 0
    while (count == nil and pos < stop) or (count ~= nil and n < count) do
        n = n + 1
        local pair = {}
        for k = 1, 2 do
            local size, at = nil, pos
            if len.kind == "int" then
                local w = len.width / 8
                if pos + w > stop then fail(pos, "map entry length overruns the frame") end
                size = V.int_at(buf, pos, w, len.order, len.signed, stop)
                pos = pos + w
            else
                size, pos = reader(len):read(buf, pos, stop, nil)
            end
            if size < 0 then
                if not (len.kind == "int" and len.signed) or size ~= -1 then
                    fail(at, "negative map entry length " .. V.int_text(size))
                end
                pair[k] = NULL
            else
                if pos + size > stop then
                    fail(pos, "map entry of " .. V.int_text(size) .. " bytes overruns the frame")
                end
                pair[k] = V.utf8(buf, pos, pos + size)
                pos = pos + size
            end
        end
        if pair[1] == NULL then fail(pos, "null map key") end
        out:put(pair[1], pair[2])
    end
    return out, pos
end

local function set(scope, name, value, node)
    node.value = value
    scope.values:put(name, value)
    scope.nodes[#scope.nodes + 1] = node
end

local function read_field(item, scope, buf, pos, stop, depth)
    local t, name, st = item.type, item.name, scope.st
    local node = { name = name, pos = pos, item = item, scope = scope.record }
    local value
    if t.kind == "int" then
        local w = t.width / 8
        if pos + w > stop then past(st, scope, pos, name) end
        value = V.int_at(buf, pos, w, t.order, t.signed, stop)
        if item.const ~= nil and not eq(value, V.literal(item.const)) then
            fail(pos, string.format("%s: expected %s, got %s", name, V.int_text(V.literal(item.const)),
                V.int_text(value)))
        end
        node.len = w
        if item.frame_length ~= nil and scope.is_frame then
            local total = num(value, name) - item.frame_length
            local at = pos + w - st.start
            if total < at then
                fail(pos, string.format("%s: frame length %d is shorter than its header", name, total))
            end
            st.frame_end = st.start + total
            if st.frame_end > st.avail then
                error({ need = true, more = st.frame_end - st.avail }, 0)
            end
            stop = st.frame_end
            st.stop = stop
        end
        set(scope, name, value, node)
        return pos + w, stop
    end
    local size = t.size
    if t.kind == "bytes" or t.kind == "string" or (t.kind == "map" and (size == nil or size[1] ~= "count")) then
        local z
        if size[1] == "rest" then
            z = stop - pos
        else
            z = eval(size[2], scope)
            if not is_int(z) then fail(pos, name .. ": no size") end
            z = num(z, name)
            local lo = item.nullable and -1 or 0
            if z < lo then fail(pos, string.format("%s: negative size %d", name, z)) end
            if pos + z > stop then past(st, scope, pos, name) end
        end
        if item.nullable and z == -1 then
            value = NULL
            z = 0
        elseif t.kind == "bytes" then
            value = V.bytes(V.sub(buf, pos, pos + z))
        elseif t.kind == "string" then
            value = V.utf8(buf, pos, pos + z)
        else
            if z > 0 then
                value = bounded(read_pairs, t, scope, buf, pos, pos + z, nil)
            else
                value = V.map()
            end
        end
        node.len = z
        if value ~= NULL then set(scope, name, value, node) end
        return pos + z, stop
    end
    if t.kind == "map" then -- map(...)[count n]
        local count = num(eval(size[2], scope), name)
        if count < 0 or count > stop - pos then fail(pos, "bad map entry count " .. count) end
        local after
        value, after = read_pairs(t, scope, buf, pos, stop, count)
        node.len = after - pos
        set(scope, name, value, node)
        return after, stop
    end
    -- a field type (or a record): one value, or a list of them
    if size == nil then
        local after, children
        value, after, children = read_one(t, scope, buf, pos, stop, depth)
        node.len, node.children = after - pos, children
        if not null(value) then set(scope, name, value, node) end
        return after, stop
    end
    if t.window then -- one value filling the bytes its size gives
        local sub = stop
        if size[1] ~= "rest" then sub = pos + num(eval(size[2], scope), name) end
        if sub < pos then fail(pos, name .. ": bad size") end
        if sub > stop then past(st, scope, pos, name) end
        local after
        value, after = bounded(read_one, t, scope, buf, pos, sub, depth)
        if after ~= sub then fail(after, name .. ": bytes after its value") end
        node.len = sub - pos
        if not null(value) then set(scope, name, value, node) end
        return sub, stop
    end
    local items, children = V.list(), {}
    local start = pos
    if size[1] == "count" then
        local count = eval(size[2], scope)
        count = is_int(count) and num(count, name) or -2
        if item.nullable and count == -1 then
            node.len = 0
            return pos, stop -- (null: no field)
        end
        if count < 0 then fail(pos, string.format("%s: bad element count %d", name, count)) end
        if count > stop - pos then
            if scope.hard or st.frame_end ~= nil then
                fail(pos, string.format("%s: bad element count %d", name, count))
            end
            V.short(pos, name)
        end
        for _ = 1, count do
            local at, v, sub = pos
            v, pos, sub = read_one(t, scope, buf, pos, stop, depth)
            items:add(v)
            children[#children + 1] = { name = name, pos = at, len = pos - at, value = v,
                children = sub, element = true, item = item, scope = scope.record }
        end
    else
        local sub = stop
        if size[1] ~= "rest" then sub = pos + num(eval(size[2], scope), name) end
        if sub < pos then fail(pos, name .. ": bad size") end
        if sub > stop then past(st, scope, pos, name) end
        while pos < sub do
            local at, v, kids = pos
            v, pos, kids = bounded(read_one, t, scope, buf, pos, sub, depth)
            items:add(v)
            children[#children + 1] = { name = name, pos = at, len = pos - at, value = v,
                children = kids, element = true, item = item, scope = scope.record }
        end
    end
    node.len, node.children, node.list = pos - start, children, true
    set(scope, name, items, node)
    return pos, stop
end

-- The bits of a container, most significant first, as its fields.
local function read_bits(item, scope, buf, pos, stop)
    local w = item.width / 8
    if pos + w > stop then past(scope.st, scope, pos, item.fields[1].name) end
    local bytes = { string.byte(buf, pos + 1, pos + w) }
    if item.order == "little" then
        local r = {}
        for i = #bytes, 1, -1 do r[#r + 1] = bytes[i] end
        bytes = r
    end
    local bit = 0 -- bits taken so far, from the most significant
    for _, f in ipairs(item.fields) do
        local v = 0
        for b = bit, bit + f.width - 1 do
            local byte = bytes[math.floor(b / 8) + 1]
            v = v * 2 + math.floor(byte / 2 ^ (7 - b % 8)) % 2
        end
        if f.const ~= nil and v ~= f.const then
            fail(pos, string.format("%s: expected %d, got %d", f.name, f.const, v))
        end
        set(scope, f.name, v, { name = f.name, pos = pos, len = w, bits = item, shift = item.width - bit - f.width,
            field = f, scope = scope.record })
        bit = bit + f.width
    end
    return pos + w
end

read_items = function(items, scope, buf, pos, stop, depth)
    for _, item in ipairs(items) do
        local kind = item.item
        if kind == "field" then
            pos, stop = read_field(item, scope, buf, pos, stop, depth)
        elseif kind == "bits" then
            pos = read_bits(item, scope, buf, pos, stop)
        elseif kind == "if" then
            if truthy(eval(item.test, scope)) then
                pos = read_items(item.body, scope, buf, pos, stop, depth)
            else
                pos = read_items(item.orelse, scope, buf, pos, stop, depth)
            end
            if scope.is_frame then stop = scope.st.stop or stop end
        else -- fail
            fail(scope.start or pos, (scope.record or SPEC.name) .. ": " .. item.message)
        end
        if scope.is_frame and scope.st.stop ~= nil then stop = scope.st.stop end
    end
    return pos
end

-- ---- the routing view --------------------------------------------------------------------

-- Each binding of the spec, computed as the generated codec's frame methods do; an
-- expression that cannot be computed (an integer beyond 2^53) is an error of that one.
local function view(frame)
    local b = SPEC.bindings
    local out, errors = {}, {}
    local function try(key, f)
        local ok, v = protect(f)
        if ok then
            out[key] = v
        elseif type(v) == "table" and v.eval then
            errors[#errors + 1] = key .. ": " .. v.reason
        else
            error(v, 0)
        end
    end
    try("stream_type", function()
        for _, rule in ipairs(SPEC.stream) do
            if rule.test == nil or truthy(eval(rule.test, frame)) then return rule.kind end
        end
        return "request"
    end)
    try("request_id", function()
        if b.request_id == nil then return NULL end
        local v = eval(b.request_id, frame)
        if b.request_id[1] == "get" or b.request_id[1] == "item" then v = to_int(v) end
        return v
    end)
    try("timeout_ms", function() return b.timeout_ms and eval(b.timeout_ms, frame) or NULL end)
    try("status", function()
        if b.status == nil or out.stream_type ~= "response" then return NULL end
        return eval(b.status, frame)
    end)
    try("service", function() return b.service and text(eval(b.service, frame)) or NULL end)
    try("method", function() return b.method and text(eval(b.method, frame)) or NULL end)
    try("headers", function()
        local headers = V.map()
        local m = b.headers and eval(b.headers, frame)
        if V.is_map(m) then
            for i = 1, m.n do
                if type(m.keys[i]) == "string" then headers:put(m.keys[i], text(m.values[i])) end
            end
        end
        for _, h in ipairs(SPEC.headers) do
            local v = eval(h.expr, frame)
            if V.is_list(v) then v = v.n > 0 and v.items[1] or NULL end
            v = text(v)
            if v ~= NULL then headers:put(h.name, v) end
        end
        return headers
    end)
    try("body_length", function()
        if b.body == nil then return 0 end
        local v = eval(b.body, frame)
        if type(v) == "string" then -- (Python's len of text: code points)
            local _, n = string.gsub(v, "[^\128-\191]", "")
            return n
        end
        return length_of(v)
    end)
    try("heartbeat", function() return SPEC.heartbeat ~= nil and truthy(eval(SPEC.heartbeat, frame)) end)
    try("goaway", function() return SPEC.goaway ~= nil and truthy(eval(SPEC.goaway, frame)) end)
    return out, errors
end

-- ---- a frame -----------------------------------------------------------------------------

-- Nodes read from a bytes field's value, moved to where that value is in the frame.
local function shift(nodes, by)
    for _, node in ipairs(nodes) do
        node.pos = node.pos + by
        if node.children then shift(node.children, by) end
    end
end

-- The inside layouts of the frame's bytes fields: read when their test holds. A layout that
-- cannot be read is an error of its own; the frame around it stays whole.
local function insides(frame, errors)
    frame.target_at = {}
    for _, node in ipairs(frame.nodes) do frame.target_at[node.name] = node.pos end
    for _, inside in ipairs(SPEC.insides) do
        local raw = frame.values:get(inside.target)
        if V.is_bytes(raw) then
            for _, layout in ipairs(inside.layouts) do
                if truthy(eval(layout.test, frame)) then
                    local scope = { values = frame.values, nodes = {}, ctx = {}, st = frame.st,
                        frame = frame, hard = true, lets = frame.lets }
                    local ok2, e = protect(function()
                        local pos = bounded(read_items, layout.items, scope, raw.s, 0, #raw.s, 0)
                        if pos ~= #raw.s then
                            fail(pos, string.format("%d unexpected bytes after the last field", #raw.s - pos))
                        end
                    end)
                    shift(scope.nodes, frame.target_at[inside.target])
                    frame.inside_nodes[inside.target] = scope.nodes
                    if not ok2 then
                        if type(e) ~= "table" or not e.fail then error(e, 0) end
                        errors[#errors + 1] = { target = inside.target,
                            offset = e.offset + frame.target_at[inside.target],
                            reason = inside.target .. ": " .. e.reason }
                    end
                    break
                end
            end
        end
    end
end

function C.parse(buf, start, avail, direction, first)
    local st = { buf = buf, start = start, avail = avail, direction = direction, first = first }
    local frame = { values = V.record(SPEC.name), nodes = {}, ctx = {}, st = st, lets = {},
        inside_nodes = {} }
    frame.frame = frame
    frame.start = start
    frame.is_frame = true
    local ok, pos = protect(read_items, SPEC.frame, frame, buf, start, avail, 0)
    if not ok then
        local e = pos
        if type(e) == "table" and e.short then
            if st.frame_end == nil then error({ need = true }, 0) end
            e = { fail = true, offset = e.offset, reason = e.reason }
        end
        error(e, 0)
    end
    if st.frame_end ~= nil and pos ~= st.frame_end then
        fail(pos, string.format("%d unexpected bytes at the end of the frame", st.frame_end - pos))
    end
    frame.length = pos - start
    local errors = {}
    insides(frame, errors)
    frame.view, frame.view_errors = view(frame)
    frame.errors = errors
    return frame
end

C.truthy, C.eq, C.null = truthy, eq, null
return C
