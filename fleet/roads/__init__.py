"""Road network from OpenStreetMap: graph, operating area, snapping, matrices, geometry."""
