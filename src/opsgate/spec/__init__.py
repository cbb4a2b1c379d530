"""The document languages: blueprints, policies and roles, loaded with every issue located."""
