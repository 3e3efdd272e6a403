"""protoc-x runtime: the stable API (runtime.api), the field-type library (runtime.fieldtypes)
and, later, the proxy layers."""
