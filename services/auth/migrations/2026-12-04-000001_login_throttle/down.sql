DROP TABLE login_known_networks;
DROP TABLE login_attempts;
