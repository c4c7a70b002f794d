"""The technologist's and admin's page on the node's HTTP port (server-rendered, Jinja2)."""
