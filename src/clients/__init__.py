"""Client applications: the `database` relation and the KurrentDB users it gives them."""
