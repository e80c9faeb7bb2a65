DROP TABLE bookings;
DROP TABLE service_requests;
DROP TABLE services;
DROP EXTENSION IF EXISTS btree_gist;
