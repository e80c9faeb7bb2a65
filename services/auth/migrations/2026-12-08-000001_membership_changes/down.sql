DROP TABLE membership_changes;
DROP SEQUENCE membership_change_order;
