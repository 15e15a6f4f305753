"""Thin request handlers: parse, one service call, render."""
