"""The native Handle protocol front end: TCP and UDP listeners and the HTTP door, one handler."""
