-- baseline: the cheapest possible round trip
SELECT 1;
