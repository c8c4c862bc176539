"""Network front ends of forsund: ``servers.thrift`` (the Thrift API) and the HTTP API."""
