"""The admin API under /api/admin/legacy: monitor, audit, steer and subscribe, behind tokens."""
