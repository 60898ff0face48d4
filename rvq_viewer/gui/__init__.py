"""The desktop app: Qt views over the Qt-free audit engine. Start it with `rvq-viewer` or `main()`."""
