"""Foundations every part uses and that know no feature: the analyst's config, errors a user can act
on, redaction of secrets, safe JSON and safe terminal text."""
