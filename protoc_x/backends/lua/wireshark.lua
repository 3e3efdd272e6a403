-- protoc-x dissector, the Wireshark side: the protocol and its fields, the tree of each frame
-- (fields in wire order, the routing view first), the Info column, TCP reassembly, and
-- registration (Decode As on TCP ports, the "ports" preference, the heuristic from `detect`).

local V, CORE, SPEC = ...

-- The protocol is registered under its spec's name; where Wireshark has a protocol of that
-- name already (kafka, thrift), under NAME_x, its fields NAME_x.FIELD.
local NAME = SPEC.name
local made, proto = pcall(Proto, NAME, NAME .. " (protoc-x)")
if not made then
    NAME = SPEC.name .. "_x"
    proto = Proto(NAME, NAME .. " (protoc-x)")
end
proto.prefs.ports = Pref.range("TCP ports", "", "Server ports of " .. NAME .. " (requests go to them)", 65535)

-- ---- fields ------------------------------------------------------------------------------

local fields = {} -- abbreviation → ProtoField
local function field(abbrev, make, label, ...)
    local f = fields[abbrev]
    if f == nil then
        f = make(abbrev, label, ...)
        fields[abbrev] = f
    end
    return f
end

-- valuestrings: enum name → {value → member name}, the status map's names
local names = {}
for ename, enum in pairs(SPEC.enums) do
    local vs = {}
    for _, m in ipairs(enum.members) do
        if type(m.value) == "number" then vs[m.value] = m.name end
    end
    names[ename] = vs
end
local status_names = {}
for _, row in ipairs(SPEC.status) do
    if type(row.code) == "number" then status_names[row.code] = row.name end
end

local UINTS = { [8] = ProtoField.uint8, [16] = ProtoField.uint16, [24] = ProtoField.uint24,
    [32] = ProtoField.uint32 }
local INTS = { [8] = ProtoField.int8, [16] = ProtoField.int16, [24] = ProtoField.int24,
    [32] = ProtoField.int32 }

-- The routing view's fields: `NAME.request_id` and its kin. A frame field of the same name is
-- the same field when the view reads just it; otherwise the frame field is `NAME.field.X`.
-- (The status never is: the view has one on responses only.)
local VIEW = { "request_id", "stream_type", "status", "service", "method", "timeout_ms",
    "headers", "heartbeat", "goaway", "body_length" }
local view_is_field = {}
for _, key in ipairs(VIEW) do
    local b = SPEC.bindings[key]
    -- (never the status: the view has one on responses only)
    view_is_field[key] = b ~= nil and b[1] == "field" and b[2] == key and key ~= "status"
        and (key ~= "headers" or #SPEC.headers == 0)
end
local renamed = {}
local function frame_fields(items)
    for _, item in ipairs(items) do
        if item.item == "field" then renamed[item.name] = true
        elseif item.item == "bits" then for _, f in ipairs(item.fields) do renamed[f.name] = true end
        elseif item.item == "if" then frame_fields(item.body); frame_fields(item.orelse) end
    end
end
frame_fields(SPEC.frame)
for _, inside in ipairs(SPEC.insides) do
    for _, layout in ipairs(inside.layouts) do frame_fields(layout.items) end
end
local VIEW_SET = {}
for _, key in ipairs(VIEW) do VIEW_SET[key] = true end
for name in pairs(renamed) do
    renamed[name] = VIEW_SET[name] and not view_is_field[name] or nil
end

-- The abbreviation of a field: `NAME.FIELD`, or `NAME.RECORD.FIELD` in a record.
local function abbrev_of(scope, name)
    if scope ~= nil then return NAME .. "." .. scope .. "." .. name end
    if renamed[name] then return NAME .. ".field." .. name end
    return NAME .. "." .. name
end

local function int_field(abbrev, label, width, signed, vs, mask)
    local make = signed and INTS[width] or UINTS[width]
    if make == nil or (vs == nil and mask == nil and width > 32) then
        return field(abbrev, signed and ProtoField.int64 or ProtoField.uint64, label, base.DEC)
    end
    return field(abbrev, make, label, base.DEC, vs, mask)
end

-- What kind of tree item a value of an ext type is, from the type's VALUE.
local EXT_FIELDS = {
    int = function(a, l) return field(a, ProtoField.int64, l, base.DEC) end,
    str = function(a, l) return field(a, ProtoField.string, l) end,
    bytes = function(a, l) return field(a, ProtoField.bytes, l) end,
    raw = function(a, l) return field(a, ProtoField.bytes, l) end,
}

local function scalar_field(abbrev, label, t, item)
    if t.kind == "int" then
        local vs = t.enum and names[t.enum] or nil
        return int_field(abbrev, label, t.width, t.signed, vs)
    elseif t.kind == "bytes" then
        return field(abbrev, ProtoField.bytes, label)
    elseif t.kind == "string" then
        return field(abbrev, ProtoField.string, label)
    elseif t.kind == "ext" and EXT_FIELDS[t.value] then
        return EXT_FIELDS[t.value](abbrev, label)
    end
    return field(abbrev, ProtoField.none, label) -- containers: maps, records, lists
end

-- Declare every field of a layout (records by name, once each).
local declared_records = {}
local declare_items
local function is_list(t)
    return t.size ~= nil and (t.kind == "ext" or t.kind == "record") and not t.window
end

local function declare_type(abbrev, label, t, item)
    local f
    if is_list(t) then
        f = field(abbrev, ProtoField.none, label)
    else
        f = scalar_field(abbrev, label, t, item)
    end
    if t.kind == "map" or (t.kind == "ext" and (t.value == "map" or EXT_FIELDS[t.value] == nil)) then
        field(abbrev .. ".key", ProtoField.string, "Key")
        field(abbrev .. ".value", ProtoField.string, "Value")
    end
    if is_list(t) then
        local elem = {}
        for k, v in pairs(t) do elem[k] = v end
        elem.size = nil
        declare_type(abbrev .. ".item", label .. " item", elem, item)
    end
    if t.kind == "record" and not declared_records[t.record] then
        declared_records[t.record] = true
        declare_items(SPEC.records[t.record].items, t.record)
    end
    return f
end

declare_items = function(items, scope)
    for _, item in ipairs(items) do
        if item.item == "field" then
            declare_type(abbrev_of(scope, item.name), item.name, item.type, item)
        elseif item.item == "bits" then
            for i, f in ipairs(item.fields) do
                local shift = item.width
                for j = 1, i do shift = shift - item.fields[j].width end
                local mask = nil
                if item.width <= 32 then mask = (2 ^ f.width - 1) * 2 ^ shift end
                int_field(abbrev_of(scope, f.name), f.name, item.width, false,
                    f.enum and names[f.enum] or nil, mask)
            end
        elseif item.item == "if" then
            declare_items(item.body, scope)
            declare_items(item.orelse, scope)
        end
    end
end
declare_items(SPEC.frame, nil)
for _, inside in ipairs(SPEC.insides) do
    for _, layout in ipairs(inside.layouts) do declare_items(layout.items, nil) end
end

local F = {}
local id_signed = SPEC.request_id_signed
F.request_id = not view_is_field.request_id and field(NAME .. ".request_id",
    id_signed and ProtoField.int64 or ProtoField.uint64, "Request id", base.DEC) or nil
F.stream_type = field(NAME .. ".stream_type", ProtoField.string, "Stream type")
F.status = not view_is_field.status and field(NAME .. ".status", ProtoField.int32, "Status",
    base.DEC, status_names) or nil
F.service = not view_is_field.service and field(NAME .. ".service", ProtoField.string, "Service") or nil
F.method = not view_is_field.method and field(NAME .. ".method", ProtoField.string, "Method") or nil
F.timeout_ms = not view_is_field.timeout_ms and field(NAME .. ".timeout_ms", ProtoField.int64,
    "Timeout (ms)", base.DEC) or nil
if not view_is_field.headers then
    F.headers = field(NAME .. ".headers", ProtoField.none, "Headers")
    field(NAME .. ".headers.key", ProtoField.string, "Key")
    field(NAME .. ".headers.value", ProtoField.string, "Value")
end
F.heartbeat = field(NAME .. ".heartbeat", ProtoField.bool, "Heartbeat")
F.goaway = field(NAME .. ".goaway", ProtoField.bool, "Goaway")
F.body_length = field(NAME .. ".body_length", ProtoField.uint32, "Body length", base.DEC)

local list = {}
for _, f in pairs(fields) do list[#list + 1] = f end
proto.fields = list

local E_MALFORMED = ProtoExpert.new(NAME .. ".malformed", "Malformed " .. NAME .. " frame",
    expert.group.MALFORMED, expert.severity.ERROR)
local E_VIEW = ProtoExpert.new(NAME .. ".view", "A value of the routing view cannot be computed",
    expert.group.UNDECODED, expert.severity.WARN)
proto.experts = { E_MALFORMED, E_VIEW }

-- ---- the tree ----------------------------------------------------------------------------

local function int64(v, signed)
    if V.is_big(v) then
        if v.hex == nil then return nil end
        return signed and Int64.fromhex(v.hex) or UInt64.fromhex(v.hex)
    end
    if type(v) ~= "number" then return nil end
    if signed or v < 0 then return Int64.new(v) end
    return UInt64.new(v)
end

local add_value

-- Map entries as key/value pairs under ``item``.
local function add_entries(item, abbrev, range, m)
    for i = 1, m.n do
        item:add(fields[abbrev .. ".key"], range, V.key_text(m.keys[i]))
        item:add(fields[abbrev .. ".value"], range, V.text(m.values[i]))
    end
end

-- Record fields (their nodes) under ``item``.
local add_nodes

-- One value of type ``t`` as an item of ``abbrev`` under ``tree``.
add_value = function(tree, tvb, abbrev, t, node, value)
    local f = fields[abbrev]
    local range = node.len > 0 and tvb(node.pos, node.len) or tvb(node.pos, 0)
    if node.list then
        local item = tree:add(f, range)
        item:append_text(string.format(" (%d)", #node.children))
        local elem = {}
        for k, v in pairs(t) do elem[k] = v end
        elem.size = nil
        for _, child in ipairs(node.children) do
            add_value(item, tvb, abbrev .. ".item", elem, child, child.value)
        end
        return item
    end
    if t.kind == "int" then
        if t.width <= 32 or type(value) ~= "number" and not V.is_big(value) then
            return tree:add(f, range, value)
        end
        return tree:add(f, range, int64(value, t.signed))
    elseif t.kind == "bytes" then
        return tree:add(f, range)
    elseif t.kind == "string" then
        return tree:add(f, range, value)
    elseif t.kind == "record" then
        local item = tree:add(f, range)
        if node.children then add_nodes(item, tvb, node.children, t.record) end
        return item
    elseif V.is_map(value) then
        local item = tree:add(f, range)
        add_entries(item, abbrev, range, value)
        return item
    elseif t.kind == "ext" and (t.value == "bytes" or t.value == "raw") and V.is_bytes(value) then
        -- (the value's bytes are the end of its encoding: the range is cut to their length)
        local n = #value.s
        if n > node.len then return tree:add(f, range, V.text(value)) end
        return tree:add(f, tvb(node.pos + node.len - n, n), value.s)
    elseif t.kind == "ext" and t.value == "int" and type(value) == "number" then
        return tree:add(f, range, int64(value, true))
    elseif t.kind == "ext" and t.value == "int" and V.is_big(value) then
        -- (beyond what the field's Int64 holds, at or above 2^63: shown as text only)
        local x = value.hex and (value.neg or tonumber(string.sub(value.hex, 1, 1), 16) < 8)
        if x then return tree:add(f, range, Int64.fromhex(value.hex)) end
        return tree:add(range, abbrev .. ": " .. V.int_text(value))
    elseif t.kind == "ext" and t.value == "str" and type(value) == "string" then
        return tree:add(f, range, value)
    end
    local item = tree:add(f, range)
    item:append_text(": " .. V.text(value))
    return item
end

add_nodes = function(tree, tvb, nodes, scope)
    for _, node in ipairs(nodes) do
        local abbrev = abbrev_of(scope, node.name)
        if node.bits then
            local r = tvb(node.pos, node.len)
            if node.bits.width <= 32 then
                if node.bits.order == "little" then tree:add_le(fields[abbrev], r) else tree:add(fields[abbrev], r) end
            else
                tree:add(fields[abbrev], r, UInt64.new(node.value or 0))
            end
        else
            local item = add_value(tree, tvb, abbrev, node.item.type, node, node.value)
            if node.inside then add_nodes(item, tvb, node.inside, nil) end
        end
    end
end

-- ---- dissecting --------------------------------------------------------------------------

local tcp_stream = Field.new("tcp.stream")
local servers = {} -- tcp.stream → the server's port, for frames found by the heuristic
local firsts = {}  -- tcp.stream and direction → (packet, offset) of the first frame

local function direction_of(pinfo)
    local port = pinfo.match_uint
    local stream = tcp_stream()
    stream = stream and stream.value
    if (port == nil or port == 0) and stream ~= nil then port = servers[stream] end
    if port == nil or port == 0 then port = math.min(pinfo.src_port, pinfo.dst_port) end
    return pinfo.dst_port == port and "request" or "response", stream
end

local function is_first(pinfo, stream, direction, offset)
    if stream == nil then return false end
    local key = stream .. direction
    local seen = firsts[key]
    if seen == nil then
        firsts[key] = { pinfo.number, offset }
        return true
    end
    return seen[1] == pinfo.number and seen[2] == offset
end

local function summary(frame)
    local v = frame.view
    local parts = { v.stream_type or "?" }
    if v.request_id ~= nil and v.request_id ~= V.NULL then parts[#parts + 1] = "id=" .. V.int_text(v.request_id) end
    if v.heartbeat then parts[#parts + 1] = "heartbeat" end
    if v.goaway then parts[#parts + 1] = "goaway" end
    if v.service ~= nil and v.service ~= V.NULL then parts[#parts + 1] = v.service end
    if v.method ~= nil and v.method ~= V.NULL then parts[#parts + 1] = v.method end
    if v.status ~= nil and v.status ~= V.NULL then
        local s = V.text(v.status)
        local nm = type(v.status) == "number" and status_names[v.status]
        parts[#parts + 1] = "status=" .. s .. (nm and " (" .. nm .. ")" or "")
    end
    return table.concat(parts, " ")
end

local function add_view(tree, tvb, frame, range)
    local v = frame.view
    local function shown(x) return x ~= nil and x ~= V.NULL end
    if F.request_id and shown(v.request_id) then
        local x = int64(v.request_id, SPEC.request_id_signed)
        if x then tree:add(F.request_id, range, x):set_generated() end
    end
    tree:add(F.stream_type, range, v.stream_type or "?"):set_generated()
    if F.status and shown(v.status) and type(v.status) == "number" then
        tree:add(F.status, range, v.status):set_generated()
    end
    if F.service and shown(v.service) then tree:add(F.service, range, v.service):set_generated() end
    if F.method and shown(v.method) then tree:add(F.method, range, v.method):set_generated() end
    if F.timeout_ms and shown(v.timeout_ms) then
        local x = int64(v.timeout_ms, true)
        if x then tree:add(F.timeout_ms, range, x):set_generated() end
    end
    if F.headers and v.headers then
        local item = tree:add(F.headers, range)
        item:set_generated()
        add_entries(item, NAME .. ".headers", range, v.headers)
    end
    tree:add(F.heartbeat, range, v.heartbeat and true or false):set_generated()
    tree:add(F.goaway, range, v.goaway and true or false):set_generated()
    if type(v.body_length) == "number" then
        tree:add(F.body_length, range, v.body_length):set_generated()
    end
end

local function show(tvb, pinfo, tree, offset, frame)
    local range = tvb(offset, frame.length)
    local root = tree:add(proto, range)
    root:append_text(": " .. summary(frame))
    add_view(root, tvb, frame, range)
    -- inside layouts are shown under the bytes field they read
    for _, node in ipairs(frame.nodes) do
        if frame.inside_nodes[node.name] then
            node.inside = frame.inside_nodes[node.name]
        end
    end
    add_nodes(root, tvb, frame.nodes, nil)
    for _, err in ipairs(frame.errors) do
        root:add_proto_expert_info(E_MALFORMED, err.reason)
    end
    for _, err in ipairs(frame.view_errors) do
        root:add_proto_expert_info(E_VIEW, err)
    end
end

-- Every whole frame in the segment (with what TCP kept of earlier ones); asks TCP for more
-- bytes when the last one goes on past it.
local function dissect(tvb, pinfo, tree)
    local n = tvb:len()
    local buf = tvb:raw(0, n)
    local direction, stream = direction_of(pinfo)
    local offset = 0
    local infos = {}
    while offset < n do
        local first = SPEC.uses_first and is_first(pinfo, stream, direction, offset) or false
        local ok, frame = xpcall(CORE.parse, function(e)
            if type(e) == "table" then return e end
            return debug.traceback("internal error of the dissector: " .. tostring(e), 2)
        end, buf, offset, n, direction, first)
        if not ok then
            local e = frame
            if type(e) == "table" and e.need then
                pinfo.desegment_offset = offset
                pinfo.desegment_len = e.more or DESEGMENT_ONE_MORE_SEGMENT
                offset = n -- (the segment is taken: TCP keeps its bytes for the next one)
                break
            end
            local reason = type(e) == "table" and e.reason or tostring(e)
            local item = tree:add(proto, tvb(offset, n - offset))
            item:append_text(": malformed: " .. reason)
            item:add_proto_expert_info(E_MALFORMED, reason)
            infos[#infos + 1] = "malformed: " .. reason
            offset = n
            break
        end
        show(tvb, pinfo, tree, offset, frame)
        infos[#infos + 1] = summary(frame)
        offset = offset + frame.length
    end
    if #infos > 0 then
        pinfo.cols.protocol = NAME
        pinfo.cols.info = table.concat(infos, ", ")
    end
    return offset
end

function proto.dissector(tvb, pinfo, tree)
    return dissect(tvb, pinfo, tree)
end

-- ---- registration ------------------------------------------------------------------------

local tcp_port = DissectorTable.get("tcp.port")
tcp_port:add_for_decode_as(proto)
local registered = nil
function proto.prefs_changed()
    if registered ~= nil then tcp_port:remove(registered, proto) end
    registered = proto.prefs.ports
    if registered ~= nil and tostring(registered) ~= "" then tcp_port:add(registered, proto) end
end

-- The heuristic: the spec's `detect` probes on the first bytes of a connection's segment.
if #SPEC.detect > 0 then
    local function heuristic(tvb, pinfo, tree)
        if tvb:len() < SPEC.detect_length then return false end
        for _, probe in ipairs(SPEC.detect) do
            local s = tvb:raw(probe.offset, probe.width)
            local v = V.int_bytes(s, probe.order, probe.signed)
            local hit = false
            for _, want in ipairs(probe.values) do
                if CORE.eq(v, V.literal(want)) then hit = true break end
            end
            if not hit then return false end
        end
        local stream = tcp_stream()
        if stream ~= nil and servers[stream.value] == nil then
            servers[stream.value] = pinfo.dst_port -- (the side that spoke first is the client)
        end
        pinfo.conversation = proto
        dissect(tvb, pinfo, tree)
        return true
    end
    proto:register_heuristic("tcp", heuristic)
end
