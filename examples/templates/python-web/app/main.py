"""Example app copied into the python-web template."""

from flask import Flask

app = Flask(__name__)


@app.get("/")
def index():
    return "hello from a Warren template\n"
