package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"

	"github.com/roomgate/roomgate/client"
)

func Example() {
	ctx := context.Background()
	c, err := client.New("http://localhost:8080", client.Options{
		Token: os.Getenv("ROOMGATE_ADMIN_TOKEN"), // roomgate token -sub ops -admin
	})
	if err != nil {
		log.Fatal(err)
	}
	lobby := c.Room("chat", "lobby")
	info, err := lobby.Info(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(info.State, info.Connections)
	err = lobby.Broadcast(ctx, []byte(`{"type":"note","text":"maintenance in 5 minutes"}`))
	if err != nil {
		log.Fatal(err)
	}
}

func ExampleRoom_Call() {
	c, _ := client.New("http://localhost:8080", client.Options{})
	var count int
	err := c.Room("counter", "x").Call(context.Background(), "increment", map[string]int{"by": 1}, &count)
	var e *client.Error
	switch {
	case errors.As(err, &e) && e.Code == client.CodeNoSuchMethod:
		log.Fatal("this node's counter has no increment method")
	case err != nil:
		log.Fatal(err)
	}
	fmt.Println(count)
}

func ExampleClient_AllRooms() {
	ctx := context.Background()
	c, _ := client.New("http://localhost:8080", client.Options{})
	for info, err := range c.AllRooms(ctx, client.RoomsQuery{Class: "chat"}) {
		if err != nil {
			log.Fatal(err)
		}
		if info.Connections == 0 && info.StorageKeys == 0 {
			continue
		}
		fmt.Println(info.Room, info.State, info.Connections)
	}
}

func ExampleError() {
	c, _ := client.New("http://localhost:8080", client.Options{})
	_, err := c.Room("chat", "gone").Info(context.Background())
	var e *client.Error
	if errors.As(err, &e) {
		fmt.Println(e.Status, e.Code) // 404 room_not_found
	}
	if client.IsNotFound(err) {
		fmt.Println("no such room")
	}
}
