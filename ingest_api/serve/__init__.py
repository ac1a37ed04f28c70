"""Reading back what was bought and spent."""
