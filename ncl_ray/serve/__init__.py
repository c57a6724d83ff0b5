"""Search over a trained model: Ray Serve app, the served index and its versions, the web page, request guard."""
