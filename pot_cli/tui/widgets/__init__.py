"""The dashboard's widgets: the connection header and one pane per tab."""
