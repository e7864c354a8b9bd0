CREATE TABLE `tag_lists` (
	`repository_id` integer PRIMARY KEY NOT NULL,
	`tags` text NOT NULL,
	`fetched_at` integer NOT NULL,
	FOREIGN KEY (`repository_id`) REFERENCES `repositories`(`id`) ON UPDATE no action ON DELETE cascade
);
