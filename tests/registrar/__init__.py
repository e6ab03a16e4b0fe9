"""Tests of the registrar."""
